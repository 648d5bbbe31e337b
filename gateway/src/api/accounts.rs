//! Accounts and credentials: registration, login, logout (here or everywhere),
//! password changes, and what ends a session when its credential ends.
//!
//! Password hashing is the one unauthenticated request that costs real CPU and
//! memory (Argon2id, ~19 MiB each by default), so it runs behind [`PasswordGate`]:
//! a few hashes at a time on the blocking pool, a short queue, and `OVERLOADED` with
//! `Retry-After` past it. A flood of logins costs the server a bounded amount of
//! memory and leaves cores for everyone else.
//!
//! Every path that ends a credential ends the sessions it authenticated at once,
//! with a `Kick` of `LOGGED_OUT`: logout ends the sessions of that token; "log out
//! everywhere" all of the user's; a password change all but the caller's token; a
//! removed device its own session and every token it was used with.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier_protocol::ErrorCode;
use courier_storage::{Account, Session, StorageError, TokenHash, TokenInfo};
use tokio::sync::Semaphore;

use crate::api::app_tokens::AppTokens;
use crate::api::limits::Limit;
use crate::api::Api;
use crate::error::ApiError;

/// How long a hash may wait for a slot before the request is shed.
const HASH_WAIT: Duration = Duration::from_secs(2);

/// Runs password hashes a few at a time, with a bounded queue.
pub struct PasswordGate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    shed: std::sync::atomic::AtomicU64,
}

impl PasswordGate {
    /// `slots` hashes at once, `max_waiting` more queued.
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            shed: Default::default(),
        }
    }

    /// Runs `hashing` (a store call that hashes a password, which the backend does
    /// off the async workers) once a slot is free; past the queue, or after waiting
    /// too long, answers `OVERLOADED`.
    pub async fn run<T, F>(&self, hashing: F) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, courier_storage::StorageError>>,
    {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.shed());
                }
                let waited =
                    tokio::time::timeout(HASH_WAIT, self.slots.clone().acquire_owned()).await;
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => return Err(self.shed()),
                }
            }
        };
        let result = hashing.await;
        drop(permit);
        Ok(result?)
    }

    fn shed(&self) -> ApiError {
        self.shed.fetch_add(1, Ordering::Relaxed);
        ApiError::overloaded(
            "too many logins at once; try again shortly",
            Duration::from_secs(1),
        )
    }

    /// Hashes refused so far.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

impl Api {
    /// Creates an account (rate-limited per client address).
    pub async fn register(
        &self,
        name: String,
        password: String,
        from: IpAddr,
    ) -> Result<Account, ApiError> {
        self.limits.address(Limit::Register, from)?;
        self.password_accounts_on()?;
        self.passwords
            .run(self.store.register(&name, &password))
            .await
    }

    /// Logs in: a new token, if the password is right and neither the account nor
    /// the address is locked out by earlier failures.
    pub async fn login(
        &self,
        name: String,
        password: String,
        from: IpAddr,
    ) -> Result<Session, ApiError> {
        self.password_accounts_on()?;
        self.limits.login_attempt(&name, from)?;
        let result = self.passwords.run(self.store.login(&name, &password)).await;
        self.note_password_check(&name, from, &result);
        // Checked after the password, so that only the account's holder learns it.
        self.unless_banned_revoke(result?).await
    }

    /// `session`, unless its user is banned: then its token is revoked. Checked
    /// after the token exists, so a ban made meanwhile (which revokes what exists,
    /// then is seen here) leaves no token behind.
    pub(crate) async fn unless_banned_revoke(&self, session: Session) -> Result<Session, ApiError> {
        if self.store.is_banned(session.user_id).await? {
            self.store
                .revoke_token_hash(&courier_storage::token_hash(&session.token))
                .await?;
            return Err(banned());
        }
        Ok(session)
    }

    fn password_accounts_on(&self) -> Result<(), ApiError> {
        match self.config.password_accounts {
            true => Ok(()),
            false => Err(ApiError::forbidden(
                "password accounts are off: sign in with the application's token",
            )),
        }
    }

    /// Feeds a password check's outcome to the login back-offs: a wrong password
    /// counts against the account and the address, a right one clears the account's.
    fn note_password_check<T>(&self, name: &str, from: IpAddr, result: &Result<T, ApiError>) {
        match result {
            Ok(_) => self.limits.login_outcome(name, from, true),
            Err(e) if e.code == ErrorCode::BadCredentials => {
                self.limits.login_outcome(name, from, false)
            }
            Err(_) => {}
        }
    }

    /// What a bearer token says, if it is valid: one of Courier's own, or one the
    /// application minted (see [`crate::api::app_tokens`]), whose user is created on
    /// first use.
    pub async fn authenticate(&self, token: &str) -> Result<TokenInfo, ApiError> {
        if let Some(app) = &self.app_tokens {
            if AppTokens::looks_like_jwt(token) {
                let claims = app.verify(token)?;
                let account = match self.store.external_account(&claims.name).await {
                    Err(StorageError::NameTaken) => {
                        return Err(ApiError::new(
                            ErrorCode::BadToken,
                            "application token: its subject is a password account",
                        ))
                    }
                    account => account?,
                };
                if let Some(shown) = &claims.display_name {
                    if self.store.display_name(account.id).await?.as_ref() != Some(shown) {
                        self.store.set_display_name(account.id, Some(shown)).await?;
                    }
                }
                return self
                    .unless_banned(TokenInfo {
                        hash: courier_storage::token_hash(token),
                        user_id: account.id,
                        expires_ms: claims.expires_ms,
                    })
                    .await;
            }
        }
        // A ban revokes every Courier token of the user, and no login or minted
        // token outlives it (both check after issuing): no ban check needed here.
        self.store
            .token_info(token)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::BadToken, "unknown or expired token"))
    }

    async fn unless_banned(&self, info: TokenInfo) -> Result<TokenInfo, ApiError> {
        match self.store.is_banned(info.user_id).await? {
            true => Err(banned()),
            false => Ok(info),
        }
    }

    /// Bans `user` (its tokens revoked, its sessions ended with `BANNED`, no login
    /// or token accepted until unbanned) or lifts the ban.
    pub async fn set_banned(&self, user: u64, banned: bool) -> Result<(), ApiError> {
        self.require_user(user).await?;
        self.store.set_banned(user, banned).await?;
        if banned {
            self.store.revoke_user_tokens(user, None).await?;
            self.registry.close_user(user, ErrorCode::Banned);
            self.forget_push_tokens(user, None).await?;
        }
        Ok(())
    }

    /// Sets (or with `None` clears) `user`'s display name.
    pub async fn set_display_name(&self, user: u64, name: Option<&str>) -> Result<(), ApiError> {
        if name.is_some_and(|n| !courier_storage::credentials::valid_display_name(n)) {
            return Err(ApiError::invalid(
                "a display name is 1 to 64 bytes without control characters",
            ));
        }
        self.require_user(user).await?;
        self.store.set_display_name(user, name).await?;
        self.tell_profile_changed(user).await
    }

    /// `user`'s display name, if set.
    pub async fn display_name(&self, user: u64) -> Result<Option<String>, ApiError> {
        Ok(self.store.display_name(user).await?)
    }

    /// The user a bearer token belongs to.
    pub async fn authenticate_token(&self, token: &str) -> Result<u64, ApiError> {
        self.authenticate(token).await.map(|t| t.user_id)
    }

    /// Revokes `token` and ends the sessions it opened.
    pub async fn logout(&self, user: u64, token: TokenHash) -> Result<(), ApiError> {
        self.store.revoke_token_hash(&token).await?;
        self.end_sessions(user, &[token]);
        self.forget_push_tokens(user, Some(&token)).await
    }

    /// Revokes every token of `user` and ends all its sessions.
    pub async fn logout_everywhere(&self, user: u64) -> Result<usize, ApiError> {
        let revoked = self.store.revoke_user_tokens(user, None).await?;
        self.registry.close_user(user, ErrorCode::LoggedOut);
        self.forget_push_tokens(user, None).await?;
        Ok(revoked.len())
    }

    /// Changes `user`'s password after checking the current one; every other token
    /// of the user is revoked and its sessions end (the caller's stays).
    pub async fn change_password(
        &self,
        user: u64,
        keep: TokenHash,
        current: String,
        new: String,
        from: IpAddr,
    ) -> Result<(), ApiError> {
        let name = self.require_user(user).await?;
        self.limits.login_attempt(&name, from)?;
        let result = self
            .passwords
            .run(self.store.change_password(&name, &current, &new, &keep))
            .await;
        self.note_password_check(&name, from, &result);
        self.end_sessions(user, &result?);
        Ok(())
    }

    /// Ends every session of `user` that one of `tokens` opened.
    pub fn end_sessions(&self, user: u64, tokens: &[TokenHash]) {
        for token in tokens {
            self.registry
                .close_credential(user, token, ErrorCode::LoggedOut);
        }
    }

    /// Deletes expired tokens (run by the lifecycle job).
    pub async fn sweep_tokens(&self, now_ms: u64) -> Result<usize, ApiError> {
        Ok(self.store.sweep_expired_tokens(now_ms).await?)
    }
}

fn banned() -> ApiError {
    ApiError::new(ErrorCode::Banned, "this account is banned")
}
