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
//! - `moderation`: muting a group or a member, enforced by the store in log order.
//! - `devices`: device bindings and the device cap.
//! - `presence` / `receipts`: storm-proof presence and read receipts (actors).
//! - `recall`: recalling messages.
//! - `edit`: editing one's text messages.
//! - `reactions`: reactions, gathered per window in big groups.
//! - `profiles`: status, picture, custom fields, and user search.
//! - `hide`: delete for me, clear history, delete a conversation (per user).
//! - `typing`: typing indicators (ephemeral, throttled).
//! - `push`: offline push through APNs and FCM, decided per device.
//! - `media`: upload, signed download, moderation routes, garbage collection.
//! - `lifecycle`: retention, media GC and the cold tier, run periodically.
//! - `dto`: the JSON shapes of the HTTP API.
//! - `router`: the store's commit listener; fans committed messages out.
//! - `frames`: dispatch of binary-protocol frames to the handlers.
//! - `http`: the axum routes.
//! - `convert`: stored message <-> protobuf <-> JSON.

pub mod accounts;
pub mod admin;
pub mod app_tokens;
pub mod conversations;
pub mod convert;
pub mod devices;
pub mod dto;
pub mod edit;
pub mod events;
pub mod frames;
pub mod groups;
pub mod hide;
pub mod http;
pub mod hygiene;
pub mod join_requests;
pub mod lifecycle;
pub mod limits;
pub mod media;
pub mod members;
pub mod messaging;
pub mod moderation;
pub mod presence;
pub mod profiles;
pub mod push;
pub mod reactions;
pub mod recall;
pub mod receipts;
pub mod relations;
pub mod router;
pub mod typing;
pub mod webhooks;

use std::sync::Arc;

use courier_storage::Storage;

use crate::config::Config;
use crate::connection::service::Delivery;
use crate::error::ApiError;

/// Shared state of the API layer.
pub struct Api {
    /// The server configuration.
    pub config: Arc<Config>,
    /// The storage backend: the API layer's own; handlers and the connection layer
    /// go through `Api`'s methods.
    store: Arc<dyn Storage>,
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
    /// The other nodes of the deployment, when this gateway is one of several.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The verifier of the application's own tokens, when keys are configured.
    pub app_tokens: Option<app_tokens::AppTokens>,
    /// The application's before-send hook, when configured.
    pub before_send: Option<webhooks::BeforeSendHook>,
    /// The outbox of asynchronous webhook events, when configured.
    pub events: Option<Arc<events::EventOutbox>>,
    /// Offline push, when APNs or FCM is configured.
    pub push: Option<Arc<push::Push>>,
    /// The typing indicators' throttle.
    pub typing: typing::TypingGate,
    /// Reactions gathered per conversation in big groups, and their counters.
    pub reactions: Arc<reactions::ReactionGate>,
}

/// A fresh client message id for server-written log events.
pub fn system_msg_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("sys-{:x}-{n:x}", courier_storage::now_ms())
}

impl Api {
    /// The API layer over `store`, reaching devices through `registry`; rate limits,
    /// the password gate and the connection budget come from `config`.
    pub(crate) fn new(
        config: Arc<Config>,
        store: Arc<dyn Storage>,
        registry: Arc<dyn Delivery>,
        members: Arc<members::MemberCache>,
        presence: presence::Presence,
        receipts: receipts::Receipts,
        media: crate::media::Media,
    ) -> Self {
        let before_send = webhooks::BeforeSendHook::from_config(&config);
        let typing =
            typing::TypingGate::new(std::time::Duration::from_millis(config.typing_interval_ms));
        let reactions = reactions::ReactionGate::new(std::time::Duration::from_millis(
            config.reaction_window_ms,
        ));
        Self {
            metrics: Arc::default(),
            connections: crate::connection::limits::ConnectionBudget::for_process(
                config.max_connections,
            ),
            limits: limits::RateLimits::new(&config),
            passwords: accounts::PasswordGate::new(
                config.password_hash_slots(),
                config.password_hash_queue,
            ),
            config,
            store,
            registry,
            members,
            presence,
            receipts,
            media,
            cluster: None,
            app_tokens: None,
            before_send,
            events: None,
            push: None,
            typing,
            reactions,
        }
    }

    /// Pushes to offline devices through `push`.
    pub(crate) fn with_push(mut self, push: Option<Arc<push::Push>>) -> Self {
        self.push = push;
        self
    }

    /// Queues webhook events in `outbox`.
    pub(crate) fn with_events(mut self, outbox: Option<Arc<events::EventOutbox>>) -> Self {
        self.events = outbox;
        self
    }

    /// Accepts the application's own tokens, checked by `verifier`.
    pub(crate) fn with_app_tokens(mut self, verifier: Option<app_tokens::AppTokens>) -> Self {
        self.app_tokens = verifier;
        self
    }

    /// The API layer of one node of a cluster.
    pub(crate) fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Whether every storage shard can write now (`/v1/health`).
    pub fn storage_writable(&self) -> bool {
        self.store.writable()
    }

    /// The storage backend's commit counters (`/metrics`).
    pub fn storage_stats(&self) -> &courier_storage::CommitStats {
        self.store.commit_stats()
    }

    /// Appends waiting in the storage queues.
    pub fn storage_queued(&self) -> usize {
        self.store.queued()
    }

    /// Finishes the store's writers and makes everything durable (at shutdown).
    pub async fn shut_down_store(&self) -> Result<(), courier_storage::StorageError> {
        self.store.shutdown().await
    }

    /// The user called `name`: its id and its name as stored.
    pub async fn find_user(&self, name: &str) -> Result<(u64, String), ApiError> {
        let account = self.store.account_by_name(name).await?.ok_or_else(|| {
            ApiError::new(
                courier_protocol::ErrorCode::UnknownUser,
                format!("no user named {name:?}"),
            )
        })?;
        Ok((account.id, account.name))
    }

    /// Administrative bulk import: makes `user` friends with each of `peers` (pairs
    /// where either blocks the other are skipped), durably; returns how many pairs
    /// are friends now. Not a user action: no requests, no consent, no limits.
    pub async fn import_friendships(&self, user: u64, peers: Vec<u64>) -> Result<usize, ApiError> {
        Ok(self.store.befriend_many(user, &peers).await?)
    }
}
