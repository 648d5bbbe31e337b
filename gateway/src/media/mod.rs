//! Media: uploads streamed to a content-addressed blob store, type sniffing and an
//! allowlist, moderation, signed download URLs, and garbage collection.
//!
//! An upload is written to a temp file while it is hashed (SHA-256) and counted; it
//! is refused the moment it passes the size limit, so a large upload never fills the
//! disk. The type is sniffed from the first bytes, never taken from the client. The
//! blob id is its hash: the same bytes uploaded twice are stored once. Downloads go
//! through signed, expiring URLs (HMAC-SHA-256 over id and expiry), so a message can
//! carry a link that works without the recipient's token.

pub mod moderation;
pub mod store;

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;
use crate::error::ApiError;
use courier_protocol::ErrorCode;

pub use moderation::{Moderator, Verdict};
pub use store::BlobStore;

type HmacSha256 = Hmac<Sha256>;

/// Everything the media routes need.
pub struct Media {
    /// Blob bytes (the hot tier).
    pub blobs: BlobStore,
    /// Old blobs, still served (the cold tier), when configured.
    pub cold: Option<BlobStore>,
    /// Where uploads stream to before they are checked and stored.
    temp_dir: std::path::PathBuf,
    /// Moderation of new uploads.
    pub moderator: Box<dyn Moderator>,
    key: [u8; 32],
}

impl Media {
    /// Opens the blob store under `<data_dir>/media` and loads (or makes) the URL
    /// signing key.
    pub fn open(config: &Config) -> std::io::Result<Self> {
        let root = config.data_dir.join("media");
        let temp_dir = config.data_dir.join("media-tmp");
        std::fs::create_dir_all(&temp_dir)?;
        // Whatever is here belongs to uploads a crash interrupted: nothing refers to it.
        let stale = remove_dir_contents(&temp_dir)?;
        if stale > 0 {
            tracing::info!(files = stale, "removed temp files of interrupted uploads");
        }
        std::fs::create_dir_all(&root)?;
        let key = signing_key(&config.data_dir.join("media-url-signing.key"))?;
        let s3 = |bucket: &str| {
            BlobStore::s3(
                &config.media_s3_endpoint,
                bucket,
                &config.media_s3_region,
                &config.media_s3_access_key,
                &config.media_s3_secret_key,
            )
        };
        let (blobs, cold) = match config.media_backend.as_str() {
            "local" => {
                let cold = match (config.media_cold_after_days, config.media_cold_dir.as_str()) {
                    (0, _) => None,
                    (_, "") => Some(BlobStore::local(config.data_dir.join("media-cold"))?),
                    (_, dir) => Some(BlobStore::local(dir)?),
                };
                (BlobStore::local(&root)?, cold)
            }
            "s3" => {
                let cold = match config.media_cold_after_days {
                    0 => None,
                    _ => Some(s3(&config.media_s3_cold_bucket)?),
                };
                (s3(&config.media_s3_bucket)?, cold)
            }
            other => {
                return Err(std::io::Error::other(format!(
                    "media_backend {other:?}: use \"local\" or \"s3\""
                )))
            }
        };
        tracing::info!(hot = %blobs.describe, cold = ?cold.as_ref().map(|c| &c.describe), "media store");
        Ok(Self {
            blobs,
            cold,
            temp_dir,
            moderator: moderation::from_config(config),
            key,
        })
    }

    /// A fresh temp file path for an upload.
    pub fn temp_path(&self, name: &str) -> std::path::PathBuf {
        self.temp_dir.join(name)
    }

    /// The store that holds blob `sha256`: the hot one, else the cold one.
    pub async fn locate(&self, sha256: &str) -> std::io::Result<Option<&BlobStore>> {
        if self.blobs.contains(sha256).await? {
            return Ok(Some(&self.blobs));
        }
        match &self.cold {
            Some(cold) if cold.contains(sha256).await? => Ok(Some(cold)),
            _ => Ok(None),
        }
    }

    fn mac(&self, sha256: &str, expires_ms: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(sha256.as_bytes());
        mac.update(b":");
        mac.update(expires_ms.to_string().as_bytes());
        mac
    }

    /// A download path for blob `sha256` valid until `expires_ms`.
    pub fn signed_path(&self, sha256: &str, expires_ms: u64) -> String {
        let sig = hex::encode(self.mac(sha256, expires_ms).finalize().into_bytes());
        format!("/v1/media/{sha256}?exp={expires_ms}&sig={sig}")
    }

    /// Checks a download link: the signature must match and the link must be live.
    pub fn verify(
        &self,
        sha256: &str,
        expires_ms: u64,
        sig: &str,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        let bad = || ApiError::new(ErrorCode::BadSignature, "invalid or expired media link");
        let sig = hex::decode(sig).map_err(|_| bad())?;
        self.mac(sha256, expires_ms)
            .verify_slice(&sig)
            .map_err(|_| bad())?;
        if now_ms > expires_ms {
            return Err(bad());
        }
        Ok(())
    }
}

/// Removes every file in `dir`; returns how many.
fn remove_dir_contents(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Reads the signing key, or makes one (32 random bytes, owner-only).
fn signing_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes.try_into().expect("32 bytes")),
        Ok(_) => Err(std::io::Error::other(format!(
            "{}: not a 32-byte key",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The MIME type of a blob, from its first bytes.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    infer::get(head).map(|t| t.mime_type())
}

/// Width and height of an image, from its first bytes.
pub fn dimensions(head: &[u8]) -> (u32, u32) {
    imagesize::blob_size(head)
        .map(|s| (s.width as u32, s.height as u32))
        .unwrap_or((0, 0))
}
