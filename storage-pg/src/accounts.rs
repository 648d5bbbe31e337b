//! Accounts and login tokens on PostgreSQL, by the rules of
//! `courier_storage::credentials` (the same names, passwords, hashes and tokens as
//! the embedded store). Hashing runs on the blocking pool, never on an async worker.

use async_trait::async_trait;
use courier_storage::credentials::{
    check_password_rules, hash_password, looks_like_token, new_token, random_user_id,
    validate_name, verify_password, MAX_NAME_BYTES, NO_PASSWORD,
};
use courier_storage::{
    now_ms, token_hash, Account, Accounts, Result, Session, StorageError, TokenHash, TokenInfo,
    Tokens,
};

use crate::error::pg;
use crate::PgStore;

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

fn account_from_row(row: &tokio_postgres::Row) -> Account {
    Account {
        id: row.get::<_, i64>(0) as u64,
        name: row.get(1),
        created_ms: row.get::<_, i64>(2) as u64,
    }
}

impl PgStore {
    /// Runs CPU-heavy credential work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| StorageError::ShuttingDown)?
    }

    async fn account_with_hash(&self, name: &str) -> Result<Option<(Account, String)>> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Ok(None);
        }
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT id, name, created_ms, password_hash FROM accounts WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| (account_from_row(&r), r.get(3))))
    }

    /// The account `name` names if `password` is its password; unknown names cost
    /// what wrong passwords cost and fail the same way.
    async fn check_password(&self, name: &str, password: &str) -> Result<Account> {
        let found = self.account_with_hash(name).await?;
        // An account without a password is checked like an unknown name.
        let hash = match &found {
            Some((_, hash)) if hash != NO_PASSWORD => hash.clone(),
            _ => {
                let inner = self.inner.clone();
                Self::blocking(move || {
                    inner
                        .dummy_hash
                        .get(inner.config.password)
                        .map(str::to_owned)
                })
                .await?
            }
        };
        let password = password.to_owned();
        let verified = Self::blocking(move || verify_password(&hash, &password)).await?;
        match found {
            Some((account, hash)) if verified && hash != NO_PASSWORD => Ok(account),
            _ => Err(StorageError::BadCredentials),
        }
    }

    /// Inserts account `name` with password hash `hash`; `NameTaken` if the name is
    /// someone's already.
    async fn create_account(&self, name: &str, hash: &str) -> Result<Account> {
        let created_ms = now_ms();
        let client = self.reader().await?;
        loop {
            let id = random_user_id();
            let inserted = client
                .execute(
                    "INSERT INTO accounts (id, name, password_hash, created_ms) VALUES ($1, $2, $3, $4)",
                    &[&(id as i64), &name, &hash, &(created_ms as i64)],
                )
                .await;
            match inserted {
                Ok(_) => {
                    return Ok(Account {
                        id,
                        name: name.to_owned(),
                        created_ms,
                    })
                }
                Err(e) if e.code().map(|c| c.code()) == Some(UNIQUE_VIOLATION) => {
                    let on_name = e
                        .as_db_error()
                        .and_then(|d| d.constraint())
                        .is_some_and(|c| c.contains("name"));
                    if on_name {
                        return Err(StorageError::NameTaken);
                    }
                    // The random id was taken: draw another.
                }
                Err(e) => return Err(pg(e)),
            }
        }
    }

    async fn issue_token(&self, user_id: u64) -> Result<Session> {
        let (token, hash) = new_token();
        let expires_ms = now_ms().saturating_add(self.inner.config.token_ttl.as_millis() as u64);
        self.reader()
            .await?
            .execute(
                "INSERT INTO tokens (hash, user_id, expires_ms) VALUES ($1, $2, $3)",
                &[&&hash[..], &(user_id as i64), &(expires_ms as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(Session {
            token,
            user_id,
            expires_ms,
        })
    }
}

#[async_trait]
impl Accounts for PgStore {
    async fn register(&self, name: &str, password: &str) -> Result<Account> {
        validate_name(name)?;
        check_password_rules(password)?;
        let params = self.inner.config.password;
        let pw = password.to_owned();
        let hash = Self::blocking(move || hash_password(params, &pw)).await?;
        self.create_account(name, &hash).await
    }

    async fn login(&self, name: &str, password: &str) -> Result<Session> {
        let account = self.check_password(name, password).await?;
        self.issue_token(account.id).await
    }

    async fn change_password(
        &self,
        name: &str,
        current: &str,
        new: &str,
        keep: &TokenHash,
    ) -> Result<Vec<TokenHash>> {
        check_password_rules(new)?;
        let account = self.check_password(name, current).await?;
        let params = self.inner.config.password;
        let pw = new.to_owned();
        let hash = Self::blocking(move || hash_password(params, &pw)).await?;
        // The new hash and the revocation in one transaction: both or neither.
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "UPDATE accounts SET password_hash = $2 WHERE id = $1",
            &[&(account.id as i64), &hash],
        )
        .await
        .map_err(pg)?;
        let revoked = tx
            .query(
                "DELETE FROM tokens WHERE user_id = $1 AND hash <> $2 RETURNING hash",
                &[&(account.id as i64), &&keep[..]],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        revoked.iter().map(|r| token_from_row(r, 0)).collect()
    }

    async fn account(&self, id: u64) -> Result<Option<Account>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT id, name, created_ms FROM accounts WHERE id = $1",
                &[&(id as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(account_from_row))
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        Ok(self.account_with_hash(name).await?.map(|(a, _)| a))
    }

    async fn set_banned(&self, user: u64, banned: bool) -> Result<()> {
        let banned_ms = banned.then(|| now_ms() as i64);
        let changed = self
            .reader()
            .await?
            .execute(
                "UPDATE accounts SET banned_ms = $2 WHERE id = $1",
                &[&(user as i64), &banned_ms],
            )
            .await
            .map_err(pg)?;
        match changed {
            0 => Err(StorageError::InvalidArgument("no such user")),
            _ => Ok(()),
        }
    }

    async fn set_display_name(&self, user: u64, name: Option<&str>) -> Result<()> {
        if name.is_some_and(|n| !courier_storage::credentials::valid_display_name(n)) {
            return Err(StorageError::InvalidArgument("display name"));
        }
        let changed = self
            .reader()
            .await?
            .execute(
                "UPDATE accounts SET display_name = $2 WHERE id = $1",
                &[&(user as i64), &name],
            )
            .await
            .map_err(pg)?;
        match changed {
            0 => Err(StorageError::InvalidArgument("no such user")),
            _ => Ok(()),
        }
    }

    async fn display_name(&self, user: u64) -> Result<Option<String>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT display_name FROM accounts WHERE id = $1",
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn set_profile(&self, user: u64, profile: &courier_storage::Profile) -> Result<()> {
        profile.validate()?;
        let (keys, values): (Vec<&str>, Vec<&str>) = profile
            .custom
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .unzip();
        let changed = self
            .reader()
            .await?
            .execute(
                "INSERT INTO profiles (user_id, status, avatar, custom_keys, custom_values,
                                       discoverable)
                 SELECT id, $2, $3, $4, $5, $6 FROM accounts WHERE id = $1
                 ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status,
                   avatar = EXCLUDED.avatar, custom_keys = EXCLUDED.custom_keys,
                   custom_values = EXCLUDED.custom_values,
                   discoverable = EXCLUDED.discoverable",
                &[
                    &(user as i64),
                    &profile.status,
                    &profile.avatar,
                    &keys,
                    &values,
                    &profile.discoverable,
                ],
            )
            .await
            .map_err(pg)?;
        match changed {
            0 => Err(StorageError::InvalidArgument("no such user")),
            _ => Ok(()),
        }
    }

    async fn profile(&self, user: u64) -> Result<courier_storage::Profile> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT status, avatar, custom_keys, custom_values, discoverable
                 FROM profiles WHERE user_id = $1",
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(match row {
            None => courier_storage::Profile::default(),
            Some(r) => courier_storage::Profile {
                status: r.get(0),
                avatar: r.get(1),
                custom: r
                    .get::<_, Vec<String>>(2)
                    .into_iter()
                    .zip(r.get::<_, Vec<String>>(3))
                    .collect(),
                discoverable: r.get(4),
            },
        })
    }

    async fn search_display_names(
        &self,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>> {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for ch in courier_storage::search_key(prefix).chars() {
            if matches!(ch, '\\' | '%' | '_') {
                pattern.push('\\');
            }
            pattern.push(ch);
        }
        pattern.push('%');
        let (after_name, after_id) = match after {
            Some((name, id)) => (name.to_owned(), id as i64),
            None => (String::new(), -1),
        };
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT id, display_name FROM accounts
                 WHERE display_name IS NOT NULL
                   AND lower(display_name) LIKE $1
                   AND (lower(display_name) COLLATE \"C\", id) > ($2 COLLATE \"C\", $3)
                 ORDER BY lower(display_name) COLLATE \"C\", id LIMIT $4",
                &[&pattern, &after_name, &after_id, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    async fn is_banned(&self, user: u64) -> Result<bool> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT banned_ms IS NOT NULL FROM accounts WHERE id = $1",
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn external_account(&self, name: &str) -> Result<Account> {
        validate_name(name)?;
        loop {
            if let Some((account, hash)) = self.account_with_hash(name).await? {
                return match hash == NO_PASSWORD {
                    true => Ok(account),
                    false => Err(StorageError::NameTaken),
                };
            }
            match self.create_account(name, NO_PASSWORD).await {
                // Another first use of the same name won the race: take its account.
                Err(StorageError::NameTaken) => continue,
                created => return created,
            }
        }
    }
}

fn token_from_row(row: &tokio_postgres::Row, column: usize) -> Result<TokenHash> {
    row.get::<_, Vec<u8>>(column)
        .try_into()
        .map_err(|_| StorageError::Corrupt("token hash"))
}

#[async_trait]
impl Tokens for PgStore {
    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>> {
        if !looks_like_token(token) {
            return Ok(None);
        }
        self.token_info_by_hash(&token_hash(token)).await
    }

    async fn issue_token(&self, user: u64) -> Result<Session> {
        PgStore::issue_token(self, user).await
    }

    async fn token_info_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenInfo>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT user_id, expires_ms FROM tokens WHERE hash = $1 AND expires_ms > $2",
                &[&&hash[..], &(now_ms() as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| TokenInfo {
            hash: *hash,
            user_id: r.get::<_, i64>(0) as u64,
            expires_ms: r.get::<_, i64>(1) as u64,
        }))
    }

    async fn revoke_token_hash(&self, hash: &TokenHash) -> Result<bool> {
        let n = self
            .reader()
            .await?
            .execute("DELETE FROM tokens WHERE hash = $1", &[&&hash[..]])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn revoke_user_tokens(
        &self,
        user: u64,
        keep: Option<&TokenHash>,
    ) -> Result<Vec<TokenHash>> {
        let keep: &[u8] = keep.map_or(&[], |k| &k[..]);
        let rows = self
            .reader()
            .await?
            .query(
                "DELETE FROM tokens WHERE user_id = $1 AND hash <> $2 RETURNING hash",
                &[&(user as i64), &keep],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|r| token_from_row(r, 0)).collect()
    }

    async fn sweep_expired_tokens(&self, now_ms: u64) -> Result<usize> {
        let n = self
            .reader()
            .await?
            .execute(
                "DELETE FROM tokens WHERE expires_ms <= $1",
                &[&(now_ms as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(n as usize)
    }
}
