//! Tokens the application's own backend mints: JWTs that name a user (`sub`), which
//! Courier verifies and accepts wherever it accepts its own bearer tokens (the HTTP
//! API and `Hello`). The user is created on first use, without a password.
//!
//! Keys: an HS256 shared secret (`jwt_hs256_secret`), and public keys from a file
//! (`jwt_public_keys`): PEM blocks (RSA for RS256, Ed25519 for EdDSA) or a JWKS
//! document. A token's `alg` picks the keys it may be checked with (an HS256 token
//! is never checked against a public key, an RS256 one never against the secret),
//! its `kid`, when both it and the key have one, the key itself; `none` is never
//! accepted. `exp` and `sub` are required, `iss` and `aud` when configured; `nbf`
//! is honoured; clocks may differ by `jwt_leeway_secs`.
//!
//! The subject is the user's Courier name (1 to 32 of `a-z 0-9 _ - .`; a UUID
//! without its dashes fits). A subject that names a password account is refused:
//! an application token never takes over an account someone registered.

use std::path::Path;

use courier_protocol::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;

/// Why the configured keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds something that is not a usable key.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// One key a token may be checked with.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// What Courier reads from a verified token.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(flatten)]
    other: std::collections::HashMap<String, serde_json::Value>,
}

/// A verified application token: whom it names and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppClaims {
    /// The user's name (the token's subject).
    pub name: String,
    /// When the token expires, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The display name from the `jwt_name_claim` claim, when it holds a valid one.
    pub display_name: Option<String>,
}

/// The configured keys and claim rules.
pub struct AppTokens {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
    name_claim: String,
}

impl AppTokens {
    /// The verifier `config` describes; `None` when no key is configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, KeyError> {
        let mut keys = Vec::new();
        if !config.jwt_hs256_secret.is_empty() {
            keys.push(Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(config.jwt_hs256_secret.as_bytes()),
            });
        }
        if !config.jwt_public_keys.is_empty() {
            keys.extend(load_public_keys(Path::new(&config.jwt_public_keys))?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Ok(Some(Self {
            keys,
            issuer: nonempty(&config.jwt_issuer),
            audience: nonempty(&config.jwt_audience),
            leeway_secs: config.jwt_leeway_secs,
            name_claim: config.jwt_name_claim.clone(),
        }))
    }

    /// Whether `token` has a JWT's shape (three dot-separated parts), so that it is
    /// checked here rather than looked up as one of Courier's own tokens.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.len() <= 8192 && token.bytes().filter(|&b| b == b'.').count() == 2
    }

    /// Verifies `token`: its signature with a key its `alg` (and `kid`) allows, then
    /// its claims. `BAD_TOKEN` says which check failed.
    pub fn verify(&self, token: &str) -> Result<AppClaims, ApiError> {
        let bad =
            |why: &str| ApiError::new(ErrorCode::BadToken, format!("application token: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| bad("not a JWT with a supported algorithm"))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(bad("no key for its algorithm or key id"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let mut last = bad("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let (Some(name), Some(exp)) = (data.claims.sub, data.claims.exp) else {
                        return Err(bad("a required claim is missing"));
                    };
                    if courier_storage::credentials::validate_name(&name).is_err() {
                        return Err(bad(
                            "its subject is not a user name (1 to 32 of a-z, 0-9, '_', '-', '.')",
                        ));
                    }
                    let display_name = data
                        .claims
                        .other
                        .get(&self.name_claim)
                        .and_then(serde_json::Value::as_str)
                        .filter(|n| courier_storage::credentials::valid_display_name(n))
                        .map(str::to_owned);
                    return Ok(AppClaims {
                        name,
                        expires_ms: exp.saturating_mul(1000),
                        display_name,
                    });
                }
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => {
                    last = bad(match e.kind() {
                        ErrorKind::ExpiredSignature => "expired",
                        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                        _ => "malformed",
                    });
                    break;
                }
            }
        }
        Err(last)
    }
}

/// Public keys from `path`: a JWKS document (JSON) or PEM blocks.
fn load_public_keys(path: &Path) -> Result<Vec<Key>, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let invalid = |why: String| KeyError::Invalid {
        path: shown.clone(),
        why,
    };
    let keys = if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        set.keys
            .iter()
            .map(|jwk| {
                let algorithm = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                        Algorithm::EdDSA
                    }
                    _ => return Err(invalid("only RSA and Ed25519 keys are supported".into())),
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
                Ok(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        pem_blocks(&text)
            .map(|block| {
                let key = |alg, parsed: jsonwebtoken::errors::Result<DecodingKey>| {
                    parsed.ok().map(|key| Key {
                        kid: None,
                        algorithm: alg,
                        key,
                    })
                };
                key(
                    Algorithm::RS256,
                    DecodingKey::from_rsa_pem(block.as_bytes()),
                )
                .or_else(|| key(Algorithm::EdDSA, DecodingKey::from_ed_pem(block.as_bytes())))
                .ok_or_else(|| {
                    invalid("a PEM block that is neither an RSA nor an Ed25519 public key".into())
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if keys.is_empty() {
        return Err(invalid("no keys".into()));
    }
    Ok(keys)
}

/// The `-----BEGIN ...-----` to `-----END ...-----` blocks of `text`.
fn pem_blocks(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut lines = text.lines();
    std::iter::from_fn(move || {
        let begin = lines.by_ref().find(|l| l.starts_with("-----BEGIN "))?;
        let mut block = vec![begin];
        for line in lines.by_ref() {
            block.push(line);
            if line.starts_with("-----END ") {
                break;
            }
        }
        Some(block.join("\n") + "\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_part_tokens_are_taken_for_jwts() {
        assert!(AppTokens::looks_like_jwt("a.b.c"));
        assert!(!AppTokens::looks_like_jwt("0123abcdef"));
        assert!(!AppTokens::looks_like_jwt("a.b"));
        assert!(!AppTokens::looks_like_jwt(&"a.b.".repeat(3000)));
    }

    #[test]
    fn pem_blocks_are_split() {
        let text =
            "x\n-----BEGIN A-----\n1\n-----END A-----\n-----BEGIN B-----\n2\n-----END B-----\n";
        let blocks: Vec<_> = pem_blocks(text).collect();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].contains("BEGIN B") && blocks[1].contains('2'));
    }
}
