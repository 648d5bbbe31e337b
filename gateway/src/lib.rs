//! The Courier gateway: the connection layer (TCP listener, sessions, online registry)
//! and the API layer (messaging, HTTP API) over the sharded store.
//!
//! # Layout
//! - [`config`]: [`Config`] and how it is layered (defaults, TOML, env, flags).
//! - [`connection`]: listeners, sessions, [`connection::registry::Registry`].
//! - [`api`]: what frames and HTTP requests mean; fan-out of committed messages.
//! - [`cluster`]: past one node: the directory and delivery between gateways (NATS).
//! - [`media`]: the blob store, type sniffing, moderation, signed links.
//! - [`error`]: [`ApiError`], the one mapping from failures to client-visible codes.
//! - [`server`]: [`Server`], which wires it all and shuts it down in order.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod server;

pub use config::Config;
pub use error::ApiError;
pub use server::Server;
