//! Login tokens: issued at login, checked on every request and handshake, revoked
//! by logout, "log out everywhere", a password change or the removal of a device
//! they were used from, and swept once expired.
//!
//! A token is 32 random bytes, shown to the client once as hex; only its SHA-256 is
//! stored, so a copy of the data directory does not leak live tokens. A per-user
//! index lists a user's tokens; the device records list the tokens each device used
//! (`devices`), which is how removing a device revokes its credentials.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `tokenhash_session` | sha256(token) | user, expiry |
//! | `usertoken_expiry` | `user sha256(token)` | expiry |

use bytes::Buf;
use sha2::{Digest, Sha256};

use crate::accounts::Session;
use crate::error::{Result, StorageError};
use crate::{now_ms, Store};

/// The SHA-256 of a token: how it is stored, and how sessions name it.
pub type TokenHash = [u8; 32];

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its hash.
    pub hash: TokenHash,
    /// The user it authenticates.
    pub user_id: u64,
    /// When it stops being valid (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// The hash of a token as the client holds it.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

fn encode(user: u64, expires_ms: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&user.to_be_bytes());
    out[8..].copy_from_slice(&expires_ms.to_be_bytes());
    out
}

/// Reads a token record. Records written while tokens listed their devices carry
/// that list after the expiry; it is ignored (device records list tokens now).
fn decode(hash: TokenHash, v: &[u8]) -> Result<TokenInfo> {
    let mut buf = v;
    if buf.remaining() < 16 {
        return Err(StorageError::Corrupt("session"));
    }
    Ok(TokenInfo {
        hash,
        user_id: buf.get_u64(),
        expires_ms: buf.get_u64(),
    })
}

fn index_key(user: u64, hash: &TokenHash) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&user.to_be_bytes());
    k[8..].copy_from_slice(hash);
    k
}

impl Store {
    /// Issues a token for `user_id` (after a successful login).
    pub fn issue_token(&self, user_id: u64) -> Result<Session> {
        let (token, hash) = crate::credentials::new_token();
        let expires_ms = now_ms().saturating_add(self.inner.config.token_ttl.as_millis() as u64);
        let shard = self.shard(self.inner.map.token_hash(&hash));
        shard
            .tokenhash_session
            .insert(hash, &encode(user_id, expires_ms))?;
        let user_shard = self.shard(self.inner.map.user(user_id));
        user_shard
            .usertoken_expiry
            .insert(index_key(user_id, &hash), &expires_ms.to_be_bytes())?;
        shard.db.flush()?;
        if !std::ptr::eq(shard, user_shard) {
            user_shard.db.flush()?;
        }
        Ok(Session {
            token,
            user_id,
            expires_ms,
        })
    }

    /// What a token says, if it is known and not expired.
    pub fn token_info(&self, token: &str) -> Result<Option<TokenInfo>> {
        if !crate::credentials::looks_like_token(token) {
            return Ok(None);
        }
        self.token_info_by_hash(&token_hash(token))
    }

    /// What the token with this hash says, if it is known and not expired.
    pub fn token_info_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenInfo>> {
        let shard = self.shard(self.inner.map.token_hash(hash));
        let Some(value) = shard.tokenhash_session.get(hash)? else {
            return Ok(None);
        };
        let info = decode(*hash, &value)?;
        Ok((now_ms() < info.expires_ms).then_some(info))
    }

    /// The user a token authenticates, if it is known and not expired.
    pub fn verify_token(&self, token: &str) -> Result<Option<u64>> {
        Ok(self.token_info(token)?.map(|t| t.user_id))
    }

    /// Revokes a token (logout). Returns whether it existed.
    pub fn revoke_token(&self, token: &str) -> Result<bool> {
        self.revoke_token_hash(&token_hash(token))
    }

    /// Revokes the token with this hash. Returns whether it existed.
    pub fn revoke_token_hash(&self, hash: &TokenHash) -> Result<bool> {
        let shard = self.shard(self.inner.map.token_hash(hash));
        let Some(old) = shard.tokenhash_session.remove(hash)? else {
            return Ok(false);
        };
        if let Ok(info) = decode(*hash, &old) {
            let user_shard = self.shard(self.inner.map.user(info.user_id));
            user_shard
                .usertoken_expiry
                .remove(index_key(info.user_id, hash))?;
            user_shard.db.flush()?;
        }
        shard.db.flush()?;
        Ok(true)
    }

    /// The tokens of `user` (expired ones included, until swept).
    pub fn user_tokens(&self, user: u64) -> Result<Vec<TokenHash>> {
        let shard = self.shard(self.inner.map.user(user));
        shard
            .usertoken_expiry
            .scan_prefix(user.to_be_bytes())
            .keys()
            .map(|k| {
                let k = k?;
                k[8..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("token index"))
            })
            .collect()
    }

    /// Revokes every token of `user` but `keep` (log out everywhere; a password
    /// change keeps the caller's). Returns the revoked hashes.
    pub fn revoke_user_tokens(
        &self,
        user: u64,
        keep: Option<&TokenHash>,
    ) -> Result<Vec<TokenHash>> {
        let mut revoked = Vec::new();
        for hash in self.user_tokens(user)? {
            if Some(&hash) == keep {
                continue;
            }
            self.revoke_token_hash(&hash)?;
            revoked.push(hash);
        }
        // Index entries whose token is gone already (swept) are dropped as well.
        let shard = self.shard(self.inner.map.user(user));
        for hash in &revoked {
            shard.usertoken_expiry.remove(index_key(user, hash))?;
        }
        shard.db.flush()?;
        Ok(revoked)
    }

    /// Deletes tokens that expired before `now_ms`, with their index entries.
    /// Returns how many were deleted.
    pub fn sweep_expired_tokens(&self, now_ms: u64) -> Result<usize> {
        let mut swept = 0;
        for shard in self.inner.shards.iter() {
            let mut expired = Vec::new();
            for entry in shard.tokenhash_session.iter() {
                let (k, v) = entry?;
                let Ok(hash) = <TokenHash>::try_from(&k[..]) else {
                    continue;
                };
                match decode(hash, &v) {
                    Ok(info) if info.expires_ms <= now_ms => expired.push(info),
                    _ => {}
                }
            }
            for info in expired {
                // Only if unchanged since the scan (a token is never extended today,
                // but a concurrent revoke may have removed it already).
                if shard.tokenhash_session.remove(info.hash)?.is_some() {
                    swept += 1;
                }
                let user_shard = self.shard(self.inner.map.user(info.user_id));
                user_shard
                    .usertoken_expiry
                    .remove(index_key(info.user_id, &info.hash))?;
            }
        }
        if swept > 0 {
            self.flush()?;
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;
    use bytes::BufMut;

    fn store(tweak: impl FnOnce(&mut StoreConfig)) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::for_tests(dir.path());
        tweak(&mut config);
        (dir, Store::open(config, None).unwrap())
    }

    #[test]
    fn log_out_everywhere_keeps_only_what_it_is_told_to() {
        let (_dir, s) = store(|_| {});
        let a = s.issue_token(1).unwrap();
        let b = s.issue_token(1).unwrap();
        let other = s.issue_token(2).unwrap();
        let keep = token_hash(&a.token);
        assert_eq!(s.revoke_user_tokens(1, Some(&keep)).unwrap().len(), 1);
        assert_eq!(s.verify_token(&a.token).unwrap(), Some(1));
        assert_eq!(s.verify_token(&b.token).unwrap(), None);
        assert_eq!(s.revoke_user_tokens(1, None).unwrap().len(), 1);
        assert_eq!(s.verify_token(&a.token).unwrap(), None);
        assert_eq!(s.verify_token(&other.token).unwrap(), Some(2));
    }

    #[test]
    fn expired_tokens_are_swept_with_their_index() {
        let (_dir, s) = store(|c| c.token_ttl = std::time::Duration::from_millis(1));
        let t = s.issue_token(3).unwrap();
        assert_eq!(s.sweep_expired_tokens(t.expires_ms - 1).unwrap(), 0);
        assert_eq!(s.sweep_expired_tokens(t.expires_ms).unwrap(), 1);
        assert!(s.user_tokens(3).unwrap().is_empty());
        assert!(!s.revoke_token(&t.token).unwrap());
    }

    #[test]
    fn records_with_a_trailing_device_list_still_read() {
        let mut old = Vec::new();
        old.put_u64(5);
        old.put_u64(99);
        old.put_slice(&[1, 5]);
        old.put_slice(b"phone");
        let info = decode([0; 32], &old).unwrap();
        assert_eq!((info.user_id, info.expires_ms), (5, 99));
        assert!(decode([0; 32], &old[..10]).is_err());
    }
}
