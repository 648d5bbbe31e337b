//! The Courier wire protocol.
//!
//! A connection carries a stream of frames: a 4-byte big-endian length, then one
//! protobuf-encoded [`pb::Frame`]. This crate owns the schema (`proto/courier.proto`),
//! the generated types, the frame codec, conversation ids and the numeric error codes.
//! It knows nothing about sockets or storage.
//!
//! # Layout
//! - [`pb`]: the generated protobuf types; [`cluster`]: those gateways exchange.
//! - [`codec`]: [`FrameCodec`] for `tokio_util::codec`, plus [`encode_frame`] /
//!   [`decode_frame`] for code that handles raw buffers.
//! - [`conversation`]: [`ConversationId`], the canonical id of a 1:1 or group log.
//! - [`frames`]: small constructors for frequently built frames.
//! - [`wire`]: the hot path without copies: `Send` read as views, `Deliver` written
//!   around a stored body.
//! - `websocket` (feature `websocket`): WebSocket messages as frames over any byte
//!   stream, for browsers; the one place here that touches a connection.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod conversation;
pub mod frames;
pub mod wire;

/// Types generated from `proto/courier.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/courier.v1.rs"));
}

/// Types generated from `proto/cluster.proto`: what gateways of one deployment tell
/// each other over NATS.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cluster {
    include!(concat!(env!("OUT_DIR"), "/courier.cluster.v1.rs"));
}

#[cfg(feature = "websocket")]
pub mod websocket;

pub use codec::{decode_frame, encode_frame, encode_frame_into, CodecError, FrameCodec};
pub use conversation::{ConversationId, ParseConversationError};
pub use pb::ErrorCode;

/// The protocol version this crate speaks; `Hello.protocol_version` must match.
pub const PROTOCOL_VERSION: u32 = 1;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Default cap on one frame's payload (the length prefix excluded).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Entry points shared by the fuzz targets (`fuzz/`) and the corpus regression test,
/// so both exercise exactly the same code. Not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    use crate::{decode_frame, encode_frame, FrameCodec};

    /// Feeds `data` to the frame decoder as a byte stream (in two pieces, split at the
    /// first byte's value) and parses every frame it yields; re-encodes each parsed
    /// frame and checks that it parses back to the same value.
    pub fn decode_stream(data: &[u8]) {
        let split = data.first().map_or(0, |&b| usize::from(b).min(data.len()));
        let mut codec = FrameCodec::new(4096);
        let mut buf = BytesMut::new();
        for piece in [&data[..split], &data[split..]] {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(payload)) => parse_payload(&payload),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            assert!(
                buf.capacity() <= 64 * 1024,
                "decoder buffer grew past its bound"
            );
        }
    }

    /// Parses `data` as one frame payload; a frame that parses must round-trip, and
    /// the server's fast reader ([`crate::wire::decode_inbound`]) must read it the
    /// same way.
    pub fn parse_payload(data: &[u8]) {
        let inbound = crate::wire::decode_inbound(bytes::Bytes::copy_from_slice(data));
        if let Ok(frame) = decode_frame(bytes::Bytes::copy_from_slice(data)) {
            let expected = match frame.kind.clone() {
                Some(crate::pb::frame::Kind::Send(send)) => {
                    crate::wire::Inbound::Send(frame.request_id, send.into())
                }
                _ => crate::wire::Inbound::Other(Box::new(frame.clone())),
            };
            match (
                inbound.expect("prost reads it, so does the fast reader"),
                expected,
            ) {
                (
                    crate::wire::Inbound::Send(id, got),
                    crate::wire::Inbound::Send(want_id, want),
                ) => {
                    assert_eq!(id, want_id);
                    assert_eq!(got.client_msg_id(), want.client_msg_id());
                    assert_eq!(got.conversation(), want.conversation());
                    assert_eq!(got.reply_to_seq, want.reply_to_seq);
                    let body = |b: Option<&[u8]>| {
                        b.map(|b| <crate::pb::MessageBody as prost::Message>::decode(b).ok())
                    };
                    assert_eq!(body(got.body()), body(want.body()));
                }
                (got, want) => assert_eq!(got, want),
            }
            let wire = encode_frame(&frame);
            let again = decode_frame(wire.slice(crate::LENGTH_PREFIX_BYTES..))
                .expect("re-encoded frame parses");
            assert_eq!(again, frame, "frame changed in a round trip");
        }
    }
}
