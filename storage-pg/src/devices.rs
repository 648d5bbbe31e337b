//! Device bindings on PostgreSQL: one row per (user, device) with the tokens the
//! device used, changed under the row's lock; removing a device revokes its
//! tokens in the same transaction.

use async_trait::async_trait;
use courier_storage::{remember_token, Bound, Device, Devices, Result, StorageError, TokenHash};

use crate::error::pg;
use crate::PgStore;

fn device_from_row(row: &tokio_postgres::Row) -> Result<Device> {
    let tokens: Vec<Vec<u8>> = row.get(4);
    Ok(Device {
        device_id: row.get(0),
        platform: row.get(1),
        first_seen_ms: row.get::<_, i64>(2) as u64,
        last_seen_ms: row.get::<_, i64>(3) as u64,
        tokens: tokens
            .into_iter()
            .map(|t| {
                t.try_into()
                    .map_err(|_| StorageError::Corrupt("device token"))
            })
            .collect::<Result<_>>()?,
    })
}

const DEVICE: &str = "device_id, platform, first_seen_ms, last_seen_ms, tokens";

#[async_trait]
impl Devices for PgStore {
    async fn devices(&self, user: u64) -> Result<Vec<Device>> {
        let rows = self
            .reader()
            .await?
            .query(
                &format!(
                    "SELECT {DEVICE} FROM devices WHERE user_id = $1
                     ORDER BY last_seen_ms, device_id"
                ),
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(device_from_row).collect()
    }

    async fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>,
    ) -> Result<Bound> {
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let user = user as i64;
        tx.execute(
            "INSERT INTO devices (user_id, device_id, platform, first_seen_ms, last_seen_ms)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            &[&user, &device_id, &platform, &(now_ms as i64)],
        )
        .await
        .map_err(pg)?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT {DEVICE} FROM devices WHERE user_id = $1 AND device_id = $2 FOR UPDATE"
                ),
                &[&user, &device_id],
            )
            .await
            .map_err(pg)?;
        let mut device = device_from_row(&row)?;
        let evicted = token.and_then(|t| remember_token(&mut device.tokens, t));
        device.platform = platform;
        device.last_seen_ms = now_ms;
        let tokens: Vec<&[u8]> = device.tokens.iter().map(|t| &t[..]).collect();
        tx.execute(
            "UPDATE devices SET platform = $3, last_seen_ms = $4, tokens = $5
             WHERE user_id = $1 AND device_id = $2",
            &[&user, &device_id, &platform, &(now_ms as i64), &tokens],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Bound { device, evicted })
    }

    async fn unbind_device(&self, user: u64, device_id: &str) -> Result<Option<Device>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING {DEVICE}"
                ),
                &[&(user as i64), &device_id],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn remove_device(&self, user: u64, device_id: &str) -> Result<Option<Device>> {
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = tx
            .query_opt(
                &format!(
                    "DELETE FROM devices WHERE user_id = $1 AND device_id = $2 RETURNING {DEVICE}"
                ),
                &[&(user as i64), &device_id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let device = device_from_row(&row)?;
        let tokens: Vec<&[u8]> = device.tokens.iter().map(|t| &t[..]).collect();
        tx.execute("DELETE FROM tokens WHERE hash = ANY($1)", &[&tokens])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(device))
    }
}
