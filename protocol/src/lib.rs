//! The Courier wire protocol.
//!
//! A connection carries a stream of frames: a 4-byte big-endian length, then one
//! protobuf-encoded [`pb::Frame`]. This crate owns the schema (`proto/courier.proto`),
//! the generated types, the frame codec, conversation ids and the numeric error codes.
//! It knows nothing about sockets or storage.
//!
//! # Layout
//! - [`pb`]: the generated protobuf types.
//! - [`codec`]: [`FrameCodec`] for `tokio_util::codec`, plus [`encode_frame`] /
//!   [`decode_frame`] for code that handles raw buffers.
//! - [`conversation`]: [`ConversationId`], the canonical id of a 1:1 or group log.
//! - [`frames`]: small constructors for frequently built frames.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conversation;
pub mod frames;

/// Types generated from `proto/courier.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/courier.v1.rs"));
}

pub use codec::{decode_frame, encode_frame, encode_frame_into, CodecError, FrameCodec};
pub use conversation::{ConversationId, ParseConversationError};
pub use pb::ErrorCode;

/// The protocol version this crate speaks; `Hello.protocol_version` must match.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default cap on one frame's payload (the length prefix excluded).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
