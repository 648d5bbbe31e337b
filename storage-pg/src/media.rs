//! Media records on PostgreSQL (the bytes live in the gateway's blob store).

use async_trait::async_trait;
use courier_storage::{BlobRecord, BlobStatus, BlobUpdate, MediaRecords, Result, StorageError};

use crate::error::pg;
use crate::PgStore;

const BLOB: &str = "sha256, size, mime, width, height, created_ms, status, referenced";

fn status_code(s: BlobStatus) -> i16 {
    match s {
        BlobStatus::Available => 0,
        BlobStatus::Quarantined => 1,
        BlobStatus::Blocked => 2,
    }
}

fn blob_from_row(r: &tokio_postgres::Row) -> Result<BlobRecord> {
    Ok(BlobRecord {
        sha256: r.get(0),
        size: r.get::<_, i64>(1) as u64,
        mime: r.get(2),
        width: r.get::<_, i32>(3) as u32,
        height: r.get::<_, i32>(4) as u32,
        created_ms: r.get::<_, i64>(5) as u64,
        status: match r.get::<_, i16>(6) {
            0 => BlobStatus::Available,
            1 => BlobStatus::Quarantined,
            2 => BlobStatus::Blocked,
            _ => return Err(StorageError::Corrupt("blob status")),
        },
        referenced: r.get(7),
    })
}

/// Blob ids are hex SHA-256s, as the embedded store requires.
fn check_sha(sha256: &str) -> Result<()> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StorageError::InvalidArgument(
            "sha256 must be 64 hex digits",
        ))
    }
}

#[async_trait]
impl MediaRecords for PgStore {
    async fn blob(&self, sha256: &str) -> Result<Option<BlobRecord>> {
        check_sha(sha256)?;
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!("SELECT {BLOB} FROM blobs WHERE sha256 = $1"),
                &[&sha256],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(blob_from_row).transpose()
    }

    async fn put_blob(&self, r: &BlobRecord) -> Result<BlobRecord> {
        check_sha(&r.sha256)?;
        let client = self.reader().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO blobs ({BLOB}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    &r.sha256,
                    &(r.size as i64),
                    &r.mime,
                    &(r.width as i32),
                    &(r.height as i32),
                    &(r.created_ms as i64),
                    &status_code(r.status),
                    &r.referenced,
                ],
            )
            .await
            .map_err(pg)?;
        self.blob(&r.sha256)
            .await?
            .ok_or(StorageError::Corrupt("blob vanished"))
    }

    async fn add_blob_owner(&self, sha256: &str, user: u64) -> Result<()> {
        check_sha(sha256)?;
        self.reader()
            .await?
            .execute(
                "INSERT INTO blob_owners (sha256, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&sha256, &(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn is_blob_owner(&self, sha256: &str, user: u64) -> Result<bool> {
        check_sha(sha256)?;
        Ok(self
            .reader()
            .await?
            .query_opt(
                "SELECT 1 FROM blob_owners WHERE sha256 = $1 AND user_id = $2",
                &[&sha256, &(user as i64)],
            )
            .await
            .map_err(pg)?
            .is_some())
    }

    async fn update_blob(&self, sha256: &str, update: BlobUpdate) -> Result<Option<BlobRecord>> {
        check_sha(sha256)?;
        let client = self.reader().await?;
        let row = match update {
            BlobUpdate::Referenced => {
                client
                    .query_opt(
                        &format!(
                            "UPDATE blobs SET referenced = true WHERE sha256 = $1 RETURNING {BLOB}"
                        ),
                        &[&sha256],
                    )
                    .await
            }
            BlobUpdate::Status(status) => {
                client
                    .query_opt(
                        &format!("UPDATE blobs SET status = $2 WHERE sha256 = $1 RETURNING {BLOB}"),
                        &[&sha256, &status_code(status)],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        row.as_ref().map(blob_from_row).transpose()
    }

    async fn blobs(&self) -> Result<Vec<BlobRecord>> {
        let rows = self
            .reader()
            .await?
            .query(&format!("SELECT {BLOB} FROM blobs ORDER BY sha256"), &[])
            .await
            .map_err(pg)?;
        rows.iter().map(blob_from_row).collect()
    }

    async fn delete_blob(&self, sha256: &str) -> Result<()> {
        check_sha(sha256)?;
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM blob_owners WHERE sha256 = $1", &[&sha256])
            .await
            .map_err(pg)?;
        tx.execute("DELETE FROM blobs WHERE sha256 = $1", &[&sha256])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }
}
