//! The API layer: decides what a frame or HTTP request means and who must receive
//! what. It talks to the connection layer only through the [`Registry`] (to push
//! frames to online devices) and answers the session's frames through
//! [`Api::on_frame`].
//!
//! # Layout
//! - `messaging`: sends, history, delivery acks, read cursors, sync.
//! - `router`: the store's commit listener; fans committed messages out.
//! - `frames`: dispatch of binary-protocol frames to the handlers.
//! - `http`: the axum routes.
//! - `convert`: stored message <-> protobuf <-> JSON.

pub mod convert;
pub mod frames;
pub mod http;
pub mod messaging;
pub mod router;

use std::sync::Arc;

use courier_storage::Store;

use crate::config::Config;
use crate::connection::registry::Registry;
use crate::error::ApiError;

/// Shared state of the API layer.
pub struct Api {
    /// The server configuration.
    pub config: Arc<Config>,
    /// The message store.
    pub store: Store,
    /// Who is online (owned by the connection layer).
    pub registry: Arc<Registry>,
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
