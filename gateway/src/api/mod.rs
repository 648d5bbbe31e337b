//! The API layer: decides what a frame or HTTP request means and who must receive
//! what. It talks to the connection layer only through the [`Registry`] (to push
//! frames to online devices) and answers the session's frames through
//! [`Api::on_frame`].
//!
//! # Layout
//! - `accounts`: registration, login, logout, password changes, bounded hashing.
//! - `limits`: rate limits; `hygiene`: what names and ids may contain.
//! - `messaging`: sends, history, delivery acks, sync.
//! - `conversations`: the conversation list, read cursors, mute/pin.
//! - `relations`: friends, follows, blocks.
//! - `groups` / `members`: groups, roles, membership events, the member cache.
//! - `devices`: device bindings and the device cap.
//! - `presence` / `receipts`: storm-proof presence and read receipts (actors).
//! - `recall`: recalling messages.
//! - `media`: upload, signed download, moderation routes, garbage collection.
//! - `lifecycle`: retention, media GC and the cold tier, run periodically.
//! - `dto`: the JSON shapes of the HTTP API.
//! - `router`: the store's commit listener; fans committed messages out.
//! - `frames`: dispatch of binary-protocol frames to the handlers.
//! - `http`: the axum routes.
//! - `convert`: stored message <-> protobuf <-> JSON.

pub mod accounts;
pub mod conversations;
pub mod convert;
pub mod devices;
pub mod dto;
pub mod frames;
pub mod groups;
pub mod http;
pub mod hygiene;
pub mod lifecycle;
pub mod limits;
pub mod media;
pub mod members;
pub mod messaging;
pub mod presence;
pub mod recall;
pub mod receipts;
pub mod relations;
pub mod router;

use std::sync::Arc;

use courier_storage::Store;

use crate::config::Config;
use crate::connection::service::Delivery;
use crate::error::ApiError;

/// Shared state of the API layer.
pub struct Api {
    /// The server configuration.
    pub config: Arc<Config>,
    /// The message store.
    pub store: Store,
    /// How devices are reached (the connection layer's registry on one node).
    pub registry: Arc<dyn Delivery>,
    /// Group member lists in memory.
    pub members: Arc<members::MemberCache>,
    /// The presence actor.
    pub presence: presence::Presence,
    /// The read-receipt actor.
    pub receipts: receipts::Receipts,
    /// Blob store, moderation and link signing.
    pub media: crate::media::Media,
    /// Connection-layer counters for `/metrics` (shared with the connection layer).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The process-wide connection budget every listener draws from.
    pub connections: crate::connection::limits::ConnectionBudget,
    /// Rate limits of every abusable action.
    pub limits: limits::RateLimits,
    /// Bounds password hashing.
    pub passwords: accounts::PasswordGate,
}

/// A fresh client message id for server-written log events.
pub fn system_msg_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("sys-{:x}-{n:x}", courier_storage::now_ms())
}

impl Api {
    /// Runs blocking store work (password hashing, flushes) off the async workers.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(ApiError::internal)?
    }
}
