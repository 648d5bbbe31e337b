//! Media blob metadata: what was uploaded (by SHA-256), who uploaded it, whether it
//! may be served, and whether any message refers to it (for garbage collection).
//! The bytes themselves live in the gateway's blob store.

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::Store;

const BLOB_V1: u8 = 1;

/// Whether a blob may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobStatus {
    /// Served to whoever holds a valid link.
    Available,
    /// Held for review: never served until released.
    Quarantined,
    /// Blocked: never served, and new uploads of the same bytes are refused.
    Blocked,
}

/// Metadata of one stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// Hex SHA-256 of the bytes (the blob's id).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type sniffed from the bytes.
    pub mime: String,
    /// Image width, 0 when not an image.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// First upload (ms since the Unix epoch).
    pub created_ms: u64,
    /// Whether it may be served.
    pub status: BlobStatus,
    /// Some message refers to it (it is not garbage).
    pub referenced: bool,
}

/// A change to a stored blob's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobUpdate {
    /// A message refers to the blob: it is not garbage.
    Referenced,
    /// Moderation set whether it may be served.
    Status(BlobStatus),
}

impl BlobUpdate {
    /// Applies the change to `record`.
    pub fn apply(self, record: &mut BlobRecord) {
        match self {
            BlobUpdate::Referenced => record.referenced = true,
            BlobUpdate::Status(status) => record.status = status,
        }
    }
}

fn encode(r: &BlobRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + r.mime.len());
    out.put_u8(BLOB_V1);
    out.put_u64(r.size);
    out.put_u32(r.width);
    out.put_u32(r.height);
    out.put_u64(r.created_ms);
    out.put_u8(match r.status {
        BlobStatus::Available => 0,
        BlobStatus::Quarantined => 1,
        BlobStatus::Blocked => 2,
    });
    out.put_u8(u8::from(r.referenced));
    out.put_slice(r.mime.as_bytes());
    out
}

fn decode(sha256: String, v: &[u8]) -> Result<BlobRecord> {
    let corrupt = || StorageError::Corrupt("blob");
    let mut buf = v;
    if buf.remaining() < 27 || buf.get_u8() != BLOB_V1 {
        return Err(corrupt());
    }
    let size = buf.get_u64();
    let width = buf.get_u32();
    let height = buf.get_u32();
    let created_ms = buf.get_u64();
    let status = match buf.get_u8() {
        0 => BlobStatus::Available,
        1 => BlobStatus::Quarantined,
        2 => BlobStatus::Blocked,
        _ => return Err(corrupt()),
    };
    let referenced = buf.get_u8() != 0;
    let mime = std::str::from_utf8(buf).map_err(|_| corrupt())?.to_owned();
    Ok(BlobRecord {
        sha256,
        size,
        mime,
        width,
        height,
        created_ms,
        status,
        referenced,
    })
}

fn sha_key(sha256: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(sha256, &mut out)
        .map_err(|_| StorageError::InvalidArgument("sha256 must be 64 hex digits"))?;
    Ok(out)
}

impl Store {
    fn media_shard(&self, key: &[u8; 32]) -> &crate::shard::ShardDb {
        self.shard(self.inner.map.token_hash(key))
    }

    /// The record of blob `sha256`.
    pub fn blob(&self, sha256: &str) -> Result<Option<BlobRecord>> {
        let key = sha_key(sha256)?;
        self.media_shard(&key)
            .sha_blob
            .get(key)?
            .map(|v| decode(sha256.to_owned(), &v))
            .transpose()
    }

    /// Records an uploaded blob unless it is known; returns the record in force.
    pub fn put_blob(&self, record: &BlobRecord) -> Result<BlobRecord> {
        let key = sha_key(&record.sha256)?;
        let shard = self.media_shard(&key);
        let _ =
            shard
                .sha_blob
                .compare_and_swap(key, None as Option<&[u8]>, Some(encode(record)))?;
        shard.db.flush()?;
        self.blob(&record.sha256)?
            .ok_or(StorageError::Corrupt("blob vanished"))
    }

    /// Records that `user` uploaded blob `sha256` (and so may send it).
    pub fn add_blob_owner(&self, sha256: &str, user: u64) -> Result<()> {
        let key = sha_key(sha256)?;
        let mut k = key.to_vec();
        k.extend_from_slice(&user.to_be_bytes());
        let shard = self.media_shard(&key);
        shard.shauser_owner.insert(k, &[])?;
        shard.db.flush()?;
        Ok(())
    }

    /// Whether `user` uploaded blob `sha256`.
    pub fn is_blob_owner(&self, sha256: &str, user: u64) -> Result<bool> {
        let key = sha_key(sha256)?;
        let mut k = key.to_vec();
        k.extend_from_slice(&user.to_be_bytes());
        Ok(self.media_shard(&key).shauser_owner.contains_key(k)?)
    }

    /// Changes a blob's fields through `change`; returns the new record.
    pub fn update_blob(
        &self,
        sha256: &str,
        change: impl Fn(&mut BlobRecord),
    ) -> Result<Option<BlobRecord>> {
        let key = sha_key(sha256)?;
        let shard = self.media_shard(&key);
        let mut failed = None;
        let updated = shard.sha_blob.update_and_fetch(key, |old| {
            let old = old?;
            match decode(sha256.to_owned(), old) {
                Ok(mut r) => {
                    change(&mut r);
                    Some(encode(&r))
                }
                Err(e) => {
                    failed = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        shard.db.flush()?;
        updated.map(|v| decode(sha256.to_owned(), &v)).transpose()
    }

    /// Every blob record (for garbage collection), shard by shard.
    pub fn blobs(&self) -> Result<Vec<BlobRecord>> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            for entry in shard.sha_blob.iter() {
                let (k, v) = entry?;
                out.push(decode(hex::encode(&k), &v)?);
            }
        }
        Ok(out)
    }

    /// Forgets a blob and its owners (after its bytes were deleted).
    pub fn delete_blob(&self, sha256: &str) -> Result<()> {
        let key = sha_key(sha256)?;
        let shard = self.media_shard(&key);
        shard.sha_blob.remove(key)?;
        for owner in shard.shauser_owner.scan_prefix(key).keys() {
            shard.shauser_owner.remove(owner?)?;
        }
        shard.db.flush()?;
        Ok(())
    }
}
