//! Reads length-prefixed frames from a byte stream without a read buffer per idle
//! connection: each read lands in a per-thread scratch buffer, and the connection
//! keeps only the bytes of frames that are not yet returned (nothing between frames).
//! A `FramedRead` would hold 8 KiB per connection for as long as it lives.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use courier_protocol::{CodecError, FrameCodec};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

/// Bytes one read may take.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Frames from `R`, each as its protobuf payload.
pub struct FrameReader<R> {
    reader: R,
    codec: FrameCodec,
    /// Read but not yet returned; unallocated between frames.
    pending: BytesMut,
    eof: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames of at most `codec`'s maximum size from `reader`.
    pub fn new(reader: R, codec: FrameCodec) -> Self {
        Self {
            reader,
            codec,
            pending: BytesMut::new(),
            eof: false,
        }
    }

    /// The next frame's payload; `None` when the stream ended between frames.
    /// Cancel-safe: bytes read are kept for the next call.
    pub async fn next(&mut self) -> Option<Result<Bytes, CodecError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, CodecError>>> {
        loop {
            match self.codec.decode(&mut self.pending) {
                Ok(Some(frame)) => {
                    if self.pending.is_empty() {
                        // Let the frame own the allocation alone; hold nothing while idle.
                        self.pending = BytesMut::new();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            if self.eof {
                return Poll::Ready(if self.pending.is_empty() {
                    None
                } else {
                    Some(Err(CodecError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "stream ended inside a frame",
                    ))))
                });
            }
            match self.read_some(cx) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(CodecError::Io(e)))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One read through the scratch buffer, appended to `pending`.
    fn read_some(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.reader).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    self.pending.extend_from_slice(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_protocol::pb::Frame;
    use courier_protocol::{decode_frame, encode_frame};
    use tokio::io::AsyncWriteExt;

    fn codec() -> FrameCodec {
        FrameCodec::new(1024)
    }

    #[tokio::test]
    async fn frames_split_anywhere_come_out_whole() {
        let (mut tx, rx) = tokio::io::duplex(7);
        let frames: Vec<Frame> = (0..50)
            .map(|i| {
                Frame::error(
                    i,
                    courier_protocol::ErrorCode::Forbidden,
                    "x".repeat(i as usize),
                )
            })
            .collect();
        let wire: Vec<u8> = frames
            .iter()
            .flat_map(|f| encode_frame(f).to_vec())
            .collect();
        tokio::spawn(async move {
            for chunk in wire.chunks(13) {
                tx.write_all(chunk).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(rx, codec());
        for f in &frames {
            let payload = reader.next().await.unwrap().unwrap();
            assert_eq!(&decode_frame(payload).unwrap(), f);
        }
        assert!(reader.next().await.is_none());
        assert_eq!(reader.pending.capacity(), 0, "nothing held between frames");
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let wire = encode_frame(&Frame::error(
            1,
            courier_protocol::ErrorCode::Forbidden,
            "abc",
        ));
        tx.write_all(&wire[..wire.len() - 1]).await.unwrap();
        drop(tx);
        let mut reader = FrameReader::new(rx, codec());
        assert!(matches!(reader.next().await, Some(Err(CodecError::Io(_)))));
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_it() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::new(rx, codec());
        assert!(matches!(
            reader.next().await,
            Some(Err(CodecError::FrameTooLarge { .. }))
        ));
        assert!(reader.pending.capacity() < 64);
    }
}
