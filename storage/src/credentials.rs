//! The credential rules every backend shares: what a user name and a password may
//! be, Argon2id hashing (and the dummy hash an unknown name is checked against, so
//! that timing does not tell which names exist), login tokens (32 random bytes shown
//! once as hex, stored as their SHA-256) and random user ids.
//!
//! Hashing and verifying are CPU-heavy: call them from a blocking context.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};

use crate::config::PasswordParams;
use crate::error::{Result, StorageError};
use crate::tokens::{token_hash, TokenHash};

/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 32;

/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;

/// Whether `name` may be shown as a display name: 1..=64 bytes of UTF-8, no
/// control characters, not only spaces.
pub fn valid_display_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= MAX_DISPLAY_NAME_BYTES
        && !name.chars().any(char::is_control)
}
/// Shortest password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// User ids are drawn below this (2^53: exact in a JavaScript number).
pub const MAX_USER_ID: u64 = 1 << 53;

/// Names are 1 to 32 characters of `a-z`, `0-9`, `_`, `-`, `.`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(StorageError::InvalidName("1 to 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(StorageError::InvalidName("only a-z, 0-9, '_', '-' and '.'"));
    }
    Ok(())
}

/// What an account without a password stores where its password hash would be
/// (no Argon2 hash looks like it, so no password ever matches it).
pub const NO_PASSWORD: &str = "!external";

/// Passwords are 8 to 1024 bytes.
pub fn check_password_rules(password: &str) -> Result<()> {
    if password.len() < MIN_PASSWORD_BYTES {
        return Err(StorageError::InvalidPassword("at least 8 bytes"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(StorageError::InvalidPassword("at most 1024 bytes"));
    }
    Ok(())
}

/// An Argon2id hash of `password` (PHC string) with a fresh salt.
pub fn hash_password(params: PasswordParams, password: &str) -> Result<String> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| StorageError::PasswordHash(e.to_string()))?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StorageError::PasswordHash(e.to_string()))
}

/// Whether `password` matches `hash` (a PHC string; its own parameters apply).
pub fn verify_password(hash: &str, password: &str) -> Result<bool> {
    let parsed = PasswordHash::new(hash).map_err(|e| StorageError::PasswordHash(e.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// A hash of a random password with the configured parameters, made once: what a
/// login for an unknown name is checked against.
#[derive(Debug, Default)]
pub struct DummyHash(std::sync::OnceLock<String>);

impl DummyHash {
    /// The hash (made on first use).
    pub fn get(&self, params: PasswordParams) -> Result<&str> {
        if let Some(hash) = self.0.get() {
            return Ok(hash);
        }
        let mut random = [0u8; 24];
        OsRng.fill(&mut random[..]);
        let hash = hash_password(params, &hex::encode(random))?;
        Ok(self.0.get_or_init(|| hash))
    }
}

/// A random user id (never 0, which means "nobody").
pub fn random_user_id() -> u64 {
    OsRng.gen_range(1..MAX_USER_ID)
}

/// A new login token and its hash.
pub fn new_token() -> (String, TokenHash) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let hash = token_hash(&token);
    (token, hash)
}

/// Whether `token` has a token's shape (64 hex digits); others are not looked up.
pub fn looks_like_token(token: &str) -> bool {
    token.len() == 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_follow_the_rules() {
        assert!(validate_name("alice_1.x-y").is_ok());
        assert!(validate_name("Alice").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(33)).is_err());
        assert!(check_password_rules("short").is_err());
        assert!(check_password_rules("long enough").is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let params = PasswordParams::insecure_fast();
        let hash = hash_password(params, "correct horse").unwrap();
        assert!(verify_password(&hash, "correct horse").unwrap());
        assert!(!verify_password(&hash, "wrong horse!").unwrap());
        let (token, hash) = new_token();
        assert!(looks_like_token(&token));
        assert_eq!(token_hash(&token), hash);
    }
}
