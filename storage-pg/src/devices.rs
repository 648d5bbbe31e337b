//! Device bindings on PostgreSQL: one row per (user, device) with the tokens the
//! device used, changed under the row's lock; removing a device revokes its
//! tokens in the same transaction.

use async_trait::async_trait;
use courier_storage::{
    remember_token, Bound, Device, Devices, PushProvider, PushToken, Result, StorageError,
    TokenHash,
};

use crate::error::pg;
use crate::PgStore;

fn push_from_row(row: &tokio_postgres::Row) -> Result<Option<PushToken>> {
    let corrupt = || StorageError::Corrupt("device push token");
    let provider = match row.get::<_, Option<i16>>(5) {
        None => return Ok(None),
        Some(1) => PushProvider::Apns,
        Some(2) => PushProvider::Fcm,
        Some(_) => return Err(corrupt()),
    };
    let credential: Vec<u8> = row.get(9);
    Ok(Some(PushToken {
        provider,
        token: row.get(6),
        app_id: row.get(7),
        sandbox: row.get(8),
        credential: credential.try_into().map_err(|_| corrupt())?,
        credential_expires_ms: row.get::<_, i64>(10) as u64,
        registered_ms: row.get::<_, i64>(11) as u64,
    }))
}

fn device_from_row(row: &tokio_postgres::Row) -> Result<Device> {
    let tokens: Vec<Vec<u8>> = row.get(4);
    Ok(Device {
        push: push_from_row(row)?,
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

const DEVICE: &str = "device_id, platform, first_seen_ms, last_seen_ms, tokens, push_provider,
    push_token, push_app, push_sandbox, push_credential, push_expires_ms, push_registered_ms";

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

    async fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>,
    ) -> Result<bool> {
        let provider = push.as_ref().map(|p| p.provider as i16);
        let token = push.as_ref().map(|p| p.token.as_str());
        let app = push.as_ref().map(|p| p.app_id.as_str());
        let sandbox = push.as_ref().map(|p| p.sandbox);
        let credential = push.as_ref().map(|p| &p.credential[..]);
        let expires = push.as_ref().map(|p| p.credential_expires_ms as i64);
        let registered = push.as_ref().map(|p| p.registered_ms as i64);
        let client = self.reader().await?;
        let changed = client
            .execute(
                "UPDATE devices SET push_provider = $3, push_token = $4, push_app = $5,
                    push_sandbox = $6, push_credential = $7, push_expires_ms = $8,
                    push_registered_ms = $9
                 WHERE user_id = $1 AND device_id = $2
                   AND ($10::text IS NULL OR push_token = $10)",
                &[
                    &(user as i64),
                    &device_id,
                    &provider,
                    &token,
                    &app,
                    &sandbox,
                    &credential,
                    &expires,
                    &registered,
                    &replacing,
                ],
            )
            .await
            .map_err(pg)?;
        // The one holder of a token: a device that held it before (another user's,
        // after the phone changed hands without a logout) gives it up.
        if changed == 1 && replacing.is_none() {
            if let Some(token) = token {
                client
                    .execute(
                        "UPDATE devices SET push_provider = NULL, push_token = NULL,
                            push_app = NULL, push_sandbox = NULL, push_credential = NULL,
                            push_expires_ms = NULL, push_registered_ms = NULL
                         WHERE push_token = $1 AND NOT (user_id = $2 AND device_id = $3)",
                        &[&token, &(user as i64), &device_id],
                    )
                    .await
                    .map_err(pg)?;
            }
        }
        Ok(changed == 1)
    }
}
