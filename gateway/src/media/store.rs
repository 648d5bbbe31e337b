//! Where blob bytes live: any `object_store` backend — a local directory (the
//! embedded default) or an S3-compatible bucket — content-addressed by SHA-256
//! (`ab/cd/<sha256>`), so the same bytes are stored once. Uploads stream into a local
//! temp file first (hashed and checked as they arrive) and are then copied into the
//! store in parts, never held whole in memory.

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

/// A content-addressed blob store.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    /// What it is, for logs.
    pub describe: String,
}

fn io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}

impl BlobStore {
    /// A store in a local directory (created if missing).
    pub fn local(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(io)?;
        Ok(Self {
            inner: Arc::new(fs),
            describe: format!("local directory {}", root.display()),
        })
    }

    /// A store in an S3-compatible bucket.
    pub fn s3(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        secret_key: &str,
    ) -> std::io::Result<Self> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key);
        if !endpoint.is_empty() {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        Ok(Self {
            inner: Arc::new(builder.build().map_err(io)?),
            describe: format!("s3 bucket {bucket} at {endpoint}"),
        })
    }

    fn path(sha256: &str) -> Path {
        Path::from(format!("{}/{}/{sha256}", &sha256[..2], &sha256[2..4]))
    }

    /// Whether blob `sha256` is stored.
    pub async fn contains(&self, sha256: &str) -> std::io::Result<bool> {
        match self.inner.head(&Self::path(sha256)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    /// Copies a fully written, hashed temp file into the store (in parts) and removes
    /// it. Returns false when the blob was there already: stored once.
    pub async fn commit(&self, temp: &FsPath, sha256: &str) -> std::io::Result<bool> {
        if self.contains(sha256).await? {
            tokio::fs::remove_file(temp).await?;
            return Ok(false);
        }
        let mut file = tokio::fs::File::open(temp).await?;
        let mut writer = BufWriter::new(self.inner.clone(), Self::path(sha256));
        tokio::io::copy(&mut file, &mut writer).await?;
        writer.shutdown().await?;
        tokio::fs::remove_file(temp).await?;
        Ok(true)
    }

    /// The bytes of `sha256` in `range` (all of it when `None`), as a stream.
    pub async fn read(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = self
            .inner
            .get_opts(&Self::path(sha256), options)
            .await
            .map_err(io)?;
        Ok(result.into_stream().map(|chunk| chunk.map_err(io)).boxed())
    }

    /// Moves blob `sha256` into `to` (the cold tier), streaming.
    pub async fn move_to(&self, sha256: &str, to: &BlobStore) -> std::io::Result<()> {
        if !to.contains(sha256).await? {
            let mut stream = self.read(sha256, None).await?;
            let mut writer = BufWriter::new(to.inner.clone(), Self::path(sha256));
            while let Some(chunk) = stream.next().await {
                writer.write_all(&chunk?).await?;
            }
            writer.shutdown().await?;
        }
        self.delete(sha256).await.map(drop)
    }

    /// Deletes blob `sha256`; true if it existed.
    pub async fn delete(&self, sha256: &str) -> std::io::Result<bool> {
        match self.inner.delete(&Self::path(sha256)).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(e)),
        }
    }
}
