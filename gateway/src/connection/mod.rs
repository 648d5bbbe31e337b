//! The connection layer: listeners, sessions, the online registry and outbound queues.
//! It moves frames and knows who is connected where; what frames mean is the
//! business of the [`service::Service`] it is given (the API layer implements it).
//! Nothing here imports the API layer.

pub mod accept;
pub mod certs;
pub mod http;
pub mod limits;
pub mod outbound;
pub mod quic;
pub mod reader;
pub mod registry;
pub mod service;
pub mod session;
pub mod tcp;
pub mod websocket;
