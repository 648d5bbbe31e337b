//! Length-prefixed framing.
//!
//! The decoder checks the announced length against the configured maximum *before*
//! it reserves or waits for the body, so a peer can never make us allocate more than
//! `max_frame_bytes + 4`. "Not enough bytes yet" is not an error: the decoder returns
//! `Ok(None)` and waits. The payload is handed out as `Bytes` and parsed separately
//! by [`decode_frame`], so a malformed protobuf does not desynchronise the stream and
//! the session can answer it with an error frame instead of dropping the connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use crate::pb::Frame;
use crate::{DEFAULT_MAX_FRAME_BYTES, LENGTH_PREFIX_BYTES};

/// Errors from framing or parsing a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The payload is not a valid protobuf `Frame`.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The underlying transport failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A `tokio_util` codec for Courier frames.
///
/// Decodes to the raw payload (`Bytes`, prefix stripped); parse it with
/// [`decode_frame`]. Encodes a [`Frame`] (or already encoded wire bytes).
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl FrameCodec {
    /// A codec that refuses payloads over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// The configured maximum payload size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if src.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        prefix.copy_from_slice(&src[..LENGTH_PREFIX_BYTES]);
        let len = u32::from_be_bytes(prefix) as usize;
        if len > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let total = LENGTH_PREFIX_BYTES + len;
        if src.len() < total {
            // Bounded by the check above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = frame.encoded_len();
        if len > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        encode_frame_into(frame, dst);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = CodecError;

    /// Writes bytes produced by [`encode_frame`] (prefix included) unchanged.
    fn encode(&mut self, wire: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&wire);
        Ok(())
    }
}

/// Encodes `frame` with its length prefix into a new buffer.
///
/// The result is the exact wire form: fan-out clones this `Bytes` (a reference count
/// bump) into every recipient's outbound queue instead of encoding per recipient.
pub fn encode_frame(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + frame.encoded_len());
    encode_frame_into(frame, &mut buf);
    buf.freeze()
}

/// Appends `frame` with its length prefix to `dst`.
pub fn encode_frame_into(frame: &Frame, dst: &mut BytesMut) {
    let len = frame.encoded_len();
    dst.reserve(LENGTH_PREFIX_BYTES + len);
    dst.put_u32(len as u32);
    frame
        .encode(dst)
        .expect("reserved enough capacity for the frame");
}

/// Parses one payload (as yielded by [`FrameCodec`]) into a [`Frame`].
///
/// Unknown fields and unknown oneof variants are skipped, as protobuf requires: a
/// frame of a type this version does not know comes back with `kind == None`.
pub fn decode_frame(payload: Bytes) -> Result<Frame, CodecError> {
    Ok(Frame::decode(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{frame::Kind, Heartbeat};

    fn heartbeat() -> Frame {
        Frame {
            request_id: 7,
            kind: Some(Kind::Heartbeat(Heartbeat { client_time_ms: 42 })),
        }
    }

    #[test]
    fn waits_for_a_whole_frame() {
        let wire = encode_frame(&heartbeat());
        let mut codec = FrameCodec::default();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(codec.decode(&mut buf).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let payload = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(decode_frame(payload).unwrap(), heartbeat());
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_an_oversized_prefix_without_reserving() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        let capacity = buf.capacity();
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1024);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn garbage_payload_is_a_typed_error() {
        let payload = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_frame(payload),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_variant_decodes_to_no_kind() {
        // Field 99, varint 1: a frame type from the future.
        let payload = Bytes::from_static(&[0x98, 0x06, 0x01]);
        let frame = decode_frame(payload).unwrap();
        assert!(frame.kind.is_none());
    }

    #[test]
    fn encoder_refuses_frames_over_the_limit() {
        let mut codec = FrameCodec::new(4);
        let mut dst = BytesMut::new();
        let err = codec.encode(&heartbeat(), &mut dst).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { .. }));
        assert!(dst.is_empty());
    }
}
