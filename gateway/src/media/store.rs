//! Where blob bytes live. The embedded default is a local directory, content-addressed
//! by SHA-256 (`<root>/ab/cd/<sha256>`), so the same bytes are stored once.

use std::path::{Path, PathBuf};

/// A content-addressed blob store on the local file system.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// A store under `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    /// Where uploads are written while they stream in.
    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
    }

    /// The path of blob `sha256` (hex).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    /// Whether blob `sha256` is stored.
    pub fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// Moves a fully written, hashed temp file into place. Returns false when the blob
    /// was there already (the temp file is removed: stored once).
    pub async fn commit(&self, temp: &Path, sha256: &str) -> std::io::Result<bool> {
        let target = self.path(sha256);
        if target.is_file() {
            tokio::fs::remove_file(temp).await?;
            return Ok(false);
        }
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(temp, &target).await?;
        Ok(true)
    }

    /// Moves blob `sha256` from this store into `to` (the cold tier).
    pub async fn move_to(&self, sha256: &str, to: &LocalBlobStore) -> std::io::Result<()> {
        let from = self.path(sha256);
        let target = to.path(sha256);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        if tokio::fs::rename(&from, &target).await.is_err() {
            // Another file system: copy, then remove.
            tokio::fs::copy(&from, &target).await?;
            tokio::fs::remove_file(&from).await?;
        }
        Ok(())
    }

    /// Deletes blob `sha256`; true if it existed.
    pub async fn delete(&self, sha256: &str) -> std::io::Result<bool> {
        match tokio::fs::remove_file(self.path(sha256)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
