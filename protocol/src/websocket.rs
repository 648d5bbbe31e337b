//! WebSocket (RFC 6455) as a transport for Courier's frames: what browsers can open.
//!
//! One binary WebSocket message carries one frame's protobuf payload (a message has
//! a length of its own, so there is no length prefix). [`WsStream`] turns a
//! connection whose HTTP upgrade is done into the byte stream that sessions speak
//! over TCP, TLS and QUIC: reading yields each message as a length prefix and its
//! payload; writing takes length-prefixed frames and sends each as one message. A
//! session runs over it unchanged.
//!
//! Headers are parsed and formatted by `tungstenite`. What a connection keeps
//! follows the rest of the connection layer: nothing between messages while idle
//! (reads go through a per-thread scratch buffer), an output buffer only while the
//! socket pushes back. Pings are answered, a Close is answered and ends the stream;
//! what RFC 6455 forbids (unmasked frames from a client, masked ones from a server,
//! reserved bits or opcodes, fragmented or long control frames, a continuation out
//! of place) closes with 1002, and a text message with 1003 (Courier speaks binary).
//! A message longer than the maximum is handed on as a prefix that names its length
//! before any of it is buffered, so the frame codec refuses it with
//! `FRAME_TOO_LARGE` exactly as on TCP (and the close says 1009).
//!
//! Writes leave what the socket does not take at once in the stream's buffer:
//! callers flush (`poll_flush`) to push it out, as with any buffered writer.

use std::cell::RefCell;
use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The path of the WebSocket endpoint on the HTTP listener.
pub const WS_PATH: &str = "/v1/ws";
/// The subprotocol a client may ask for (`Sec-WebSocket-Protocol`).
pub const WS_SUBPROTOCOL: &str = "courier.v1";

/// Bytes one read may take.
const SCRATCH_BYTES: usize = 16 * 1024;
/// Longest payload of a control frame (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Which end of the connection this is: a client masks what it sends and must
/// receive unmasked frames; a server the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepted the upgrade.
    Server,
    /// Asked for it.
    Client,
}

/// A WebSocket connection as a stream of length-prefixed frames (see the module).
pub struct WsStream<S> {
    io: S,
    role: Role,
    max_message: usize,
    /// Received bytes not decoded yet: only while a frame is incomplete.
    raw: BytesMut,
    /// The fragments of a message not finished yet.
    message: BytesMut,
    in_message: bool,
    /// A decoded message being handed out: its length prefix (from `prefix_at`),
    /// then its payload.
    prefix: [u8; 4],
    prefix_at: usize,
    payload: Bytes,
    /// The peer closed (or the socket ended between messages): reads return EOF.
    eof: bool,
    /// Reading failed; every later read fails too.
    failed: Option<(io::ErrorKind, &'static str)>,
    /// A message past the maximum was announced: the close says 1009.
    too_large: bool,
    /// A length-prefixed frame the writer has not finished.
    partial: BytesMut,
    /// Encoded frames the socket has not taken yet (control frames queue here too).
    pending: BytesMut,
    close_sent: bool,
}

impl<S> WsStream<S> {
    /// Frames over `io`, whose upgrade is done; messages up to `max_message` bytes.
    pub fn new(io: S, role: Role, max_message: usize) -> Self {
        Self::with_read(io, role, max_message, Bytes::new())
    }

    /// As [`Self::new`], with bytes already read past the upgrade's head.
    pub fn with_read(io: S, role: Role, max_message: usize, read: Bytes) -> Self {
        Self {
            io,
            role,
            max_message,
            raw: BytesMut::from(&read[..]),
            message: BytesMut::new(),
            in_message: false,
            prefix: [0; 4],
            prefix_at: 4,
            payload: Bytes::new(),
            eof: false,
            failed: None,
            too_large: false,
            partial: BytesMut::new(),
            pending: BytesMut::new(),
            close_sent: false,
        }
    }

    /// Bytes this connection holds in its buffers now (for memory tests).
    pub fn buffered_capacity(&self) -> usize {
        self.raw.capacity()
            + self.message.capacity()
            + self.partial.capacity()
            + self.pending.capacity()
    }
}

/// What decoding one frame from `raw` gave.
enum Decoded {
    /// A whole message.
    Message(Bytes),
    /// A message of this many bytes, past the maximum.
    TooLarge(u64),
    /// A control frame or a fragment: nothing to hand out.
    Handled,
    /// The peer's Close.
    Closed,
    /// The frame is not all here yet.
    NeedMore,
}

/// Why the peer broke the protocol, and the close code that says so.
struct Violation(CloseCode, &'static str);

fn mask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

impl<S> WsStream<S> {
    /// Appends one frame to `out`, masked when this is a client.
    fn encode(role: Role, opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
        let header = FrameHeader {
            is_final: true,
            opcode,
            mask: (role == Role::Client).then(rand::random::<[u8; 4]>),
            ..FrameHeader::default()
        };
        let len = payload.len() as u64;
        out.reserve(header.len(len) + payload.len());
        header
            .format(len, &mut out.writer())
            .expect("a header formats into memory");
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            mask(&mut out[start..], key);
        }
    }

    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&u16::from(code).to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        Self::encode(
            self.role,
            OpCode::Control(Control::Close),
            &payload,
            &mut self.pending,
        );
    }

    /// Decodes the next frame in `raw`, if it is all there.
    fn decode(&mut self) -> Result<Decoded, Violation> {
        use CloseCode::Protocol;
        let mut cursor = Cursor::new(&self.raw[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Decoded::NeedMore),
            Err(_) => return Err(Violation(Protocol, "malformed frame header")),
        };
        let header_len = cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation(Protocol, "reserved bits set"));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(Violation(Protocol, "unmasked client frame")),
            (Role::Client, true) => return Err(Violation(Protocol, "masked server frame")),
            _ => {}
        }
        match header.opcode {
            OpCode::Data(Data::Text) => {
                return Err(Violation(CloseCode::Unsupported, "binary messages only"))
            }
            OpCode::Data(Data::Binary) if self.in_message => {
                return Err(Violation(Protocol, "a new message inside a fragmented one"))
            }
            OpCode::Data(Data::Continue) if !self.in_message => {
                return Err(Violation(Protocol, "a continuation without a message"))
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(Violation(Protocol, "reserved opcode"))
            }
            OpCode::Control(_) if !header.is_final || len > MAX_CONTROL_PAYLOAD => {
                return Err(Violation(Protocol, "fragmented or long control frame"))
            }
            OpCode::Data(_) => {
                let total = self.message.len() as u64 + len;
                if total > self.max_message as u64 {
                    return Ok(Decoded::TooLarge(total));
                }
            }
            OpCode::Control(_) => {}
        }
        if ((self.raw.len() - header_len) as u64) < len {
            return Ok(Decoded::NeedMore);
        }
        self.raw.advance(header_len);
        let mut payload = self.raw.split_to(len as usize);
        if self.raw.is_empty() {
            self.raw = BytesMut::new();
        }
        if let Some(key) = header.mask {
            mask(&mut payload, key);
        }
        Ok(match header.opcode {
            OpCode::Data(Data::Binary) if header.is_final => Decoded::Message(payload.freeze()),
            OpCode::Data(Data::Binary) => {
                self.message = payload;
                self.in_message = true;
                Decoded::Handled
            }
            OpCode::Data(_) => {
                self.message.extend_from_slice(&payload);
                if !header.is_final {
                    return Ok(Decoded::Handled);
                }
                self.in_message = false;
                Decoded::Message(std::mem::take(&mut self.message).freeze())
            }
            OpCode::Control(Control::Ping) => {
                if !self.close_sent {
                    Self::encode(
                        self.role,
                        OpCode::Control(Control::Pong),
                        &payload,
                        &mut self.pending,
                    );
                }
                Decoded::Handled
            }
            OpCode::Control(Control::Close) => {
                let code = match payload.len() {
                    0 => CloseCode::Normal,
                    1 => return Err(Violation(Protocol, "a one-byte close payload")),
                    _ => CloseCode::from(u16::from_be_bytes([payload[0], payload[1]])),
                };
                if !code.is_allowed() {
                    return Err(Violation(Protocol, "a close code that may not be sent"));
                }
                self.queue_close(code, "");
                Decoded::Closed
            }
            OpCode::Control(_) => Decoded::Handled,
        })
    }
}

impl<S: AsyncWrite + Unpin> WsStream<S> {
    /// Writes `pending` out: ready once it is all written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        // A connection going quiet keeps no write buffer.
        self.pending = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Takes the length-prefixed frames in `buf` (and the start of one, kept in
    /// `partial`), each as a binary message appended to `out`.
    fn encode_frames(&mut self, buf: &[u8], out: &mut BytesMut) {
        let binary = OpCode::Data(Data::Binary);
        let mut rest = buf;
        if !self.partial.is_empty() {
            if self.partial.len() < 4 {
                let take = (4 - self.partial.len()).min(rest.len());
                self.partial.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.partial.len() < 4 {
                    return;
                }
            }
            let len = u32::from_be_bytes(self.partial[..4].try_into().expect("4 bytes")) as usize;
            let take = (4 + len - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < 4 + len {
                return;
            }
            Self::encode(self.role, binary, &self.partial[4..], out);
            self.partial = BytesMut::new();
        }
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() < 4 + len {
                break;
            }
            Self::encode(self.role, binary, &rest[4..4 + len], out);
            rest = &rest[4 + len..];
        }
        self.partial.extend_from_slice(rest);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// One read through the scratch buffer, appended to `raw`.
    fn read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.raw.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        })
    }

    /// Pushes out queued control frames if the socket takes them now; what it does
    /// not take goes with the next write or flush.
    fn nudge(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.prefix_at < 4 || !this.payload.is_empty() {
                if this.prefix_at < 4 {
                    let n = (4 - this.prefix_at).min(buf.remaining());
                    buf.put_slice(&this.prefix[this.prefix_at..this.prefix_at + n]);
                    this.prefix_at += n;
                }
                let n = this.payload.len().min(buf.remaining());
                buf.put_slice(&this.payload[..n]);
                this.payload.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some((kind, why)) = this.failed {
                return Poll::Ready(Err(io::Error::new(kind, why)));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.decode() {
                Ok(Decoded::Message(payload)) => {
                    this.prefix = (payload.len() as u32).to_be_bytes();
                    this.prefix_at = 0;
                    this.payload = payload;
                }
                Ok(Decoded::TooLarge(len)) => {
                    // The codec refuses it by its prefix; nothing after it is read.
                    this.prefix = (len.min(u64::from(u32::MAX)) as u32).to_be_bytes();
                    this.prefix_at = 0;
                    this.too_large = true;
                    this.failed = Some((io::ErrorKind::InvalidData, "message too large"));
                }
                Ok(Decoded::Handled) => this.nudge(cx)?,
                Ok(Decoded::Closed) => {
                    this.eof = true;
                    this.nudge(cx)?;
                }
                Ok(Decoded::NeedMore) => match ready!(this.read_some(cx))? {
                    0 if this.raw.is_empty() && !this.in_message => this.eof = true,
                    0 => {
                        this.failed = Some((
                            io::ErrorKind::UnexpectedEof,
                            "connection ended inside a message",
                        ))
                    }
                    _ => {}
                },
                Err(Violation(code, why)) => {
                    this.queue_close(code, why);
                    this.failed = Some((io::ErrorKind::InvalidData, why));
                    this.raw = BytesMut::new();
                    this.nudge(cx)?;
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket is closing",
            )));
        }
        let mut out = BytesMut::new();
        this.encode_frames(buf, &mut out);
        if !out.is_empty() {
            this.pending = out;
            this.nudge(cx)?;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let code = match this.too_large {
            true => CloseCode::Size,
            false => CloseCode::Normal,
        };
        this.queue_close(code, "");
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &[u8]) -> String {
    tungstenite::handshake::derive_accept_key(client_key)
}

/// Why a client's upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The connection failed.
    #[error("websocket upgrade: {0}")]
    Io(#[from] io::Error),
    /// The server answered something other than a WebSocket upgrade.
    #[error("websocket upgrade refused: {0}")]
    Refused(String),
}

/// Longest response head a client reads during the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Upgrades `io` (a client's connection to `host`) at `path`, asking for the
/// `courier.v1` subprotocol; returns the stream of frames.
pub async fn connect<S>(
    mut io: S,
    host: &str,
    path: &str,
    max_message: usize,
) -> Result<WsStream<S>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {WS_SUBPROTOCOL}\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let mut head = Vec::with_capacity(512);
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(UpgradeError::Refused("response head too long".into()));
        }
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpgradeError::Refused("connection closed".into()));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response
        .parse(&head[..end])
        .map_err(|e| UpgradeError::Refused(format!("malformed response: {e}")))?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if response.code != Some(101) {
        return Err(UpgradeError::Refused(format!(
            "HTTP {} {}",
            response.code.unwrap_or(0),
            response.reason.unwrap_or("")
        )));
    }
    if header("sec-websocket-accept").as_deref() != Some(accept_key(key.as_bytes()).as_str()) {
        return Err(UpgradeError::Refused("wrong Sec-WebSocket-Accept".into()));
    }
    let rest = Bytes::copy_from_slice(&head[end..]);
    Ok(WsStream::with_read(io, Role::Client, max_message, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Frame;
    use crate::{encode_frame, ErrorCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair(
        max: usize,
    ) -> (
        WsStream<tokio::io::DuplexStream>,
        WsStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(4096);
        (
            WsStream::new(a, Role::Client, max),
            WsStream::new(b, Role::Server, max),
        )
    }

    async fn read_frame<S: AsyncRead + AsyncWrite + Unpin>(s: &mut WsStream<S>) -> Vec<u8> {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).await.unwrap();
        let mut payload = vec![0; u32::from_be_bytes(prefix) as usize];
        s.read_exact(&mut payload).await.unwrap();
        payload
    }

    #[tokio::test]
    async fn frames_cross_both_ways_whatever_the_write_splits() {
        let (mut client, mut server) = pair(1 << 20);
        let frames: Vec<Bytes> = (0..40)
            .map(|i| {
                encode_frame(&Frame::error(
                    i,
                    ErrorCode::Forbidden,
                    "x".repeat(i as usize * 300),
                ))
            })
            .collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(7) {
                client.write_all(chunk).await.unwrap();
            }
            client.flush().await.unwrap();
            client
        });
        for f in &frames {
            assert_eq!(read_frame(&mut server).await, f[4..].to_vec());
        }
        let mut client = writer.await.unwrap();
        server.write_all(&frames[3]).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(read_frame(&mut client).await, frames[3][4..].to_vec());
        assert_eq!(server.buffered_capacity(), 0, "nothing held between frames");
        // A close ends the other side's reads.
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn pings_are_answered_and_fragments_joined() {
        let (a, b) = tokio::io::duplex(4096);
        let mut server = WsStream::new(b, Role::Server, 1024);
        let mut raw = a;
        let mut wire = BytesMut::new();
        WsStream::<()>::encode(
            Role::Client,
            OpCode::Control(Control::Ping),
            b"hi",
            &mut wire,
        );
        let first = FrameHeader {
            is_final: false,
            opcode: OpCode::Data(Data::Binary),
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        first.format(3, &mut (&mut wire).writer()).unwrap();
        let start = wire.len();
        wire.extend_from_slice(b"abc");
        mask(&mut wire[start..], [1, 2, 3, 4]);
        let last = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Continue),
            mask: Some([9, 9, 9, 9]),
            ..FrameHeader::default()
        };
        last.format(2, &mut (&mut wire).writer()).unwrap();
        let start = wire.len();
        wire.extend_from_slice(b"de");
        mask(&mut wire[start..], [9, 9, 9, 9]);
        raw.write_all(&wire).await.unwrap();
        assert_eq!(read_frame(&mut server).await, b"abcde");
        // The pong went out unmasked, with the ping's payload.
        let mut pong = [0u8; 4];
        raw.read_exact(&mut pong).await.unwrap();
        assert_eq!(pong, [0x8a, 2, b'h', b'i']);
    }

    #[tokio::test]
    async fn violations_close_with_their_code() {
        for (frame, code) in [
            // Unmasked binary frame from a client.
            (vec![0x82u8, 1, b'x'], 1002u16),
            // Text.
            (vec![0x81, 0x81, 0, 0, 0, 0, b'x'], 1003),
            // A continuation with no message.
            (vec![0x80, 0x81, 0, 0, 0, 0, b'x'], 1002),
            // Reserved bit.
            (vec![0xc2, 0x81, 0, 0, 0, 0, b'x'], 1002),
            // A fragmented ping.
            (vec![0x09, 0x80, 0, 0, 0, 0], 1002),
        ] {
            let (mut raw, b) = tokio::io::duplex(4096);
            let mut server = WsStream::new(b, Role::Server, 1024);
            raw.write_all(&frame).await.unwrap();
            let mut buf = [0u8; 16];
            assert!(server.read(&mut buf).await.is_err(), "{frame:?}");
            let mut close = [0u8; 4];
            raw.read_exact(&mut close).await.unwrap();
            assert_eq!(close[0], 0x88, "{frame:?}");
            assert_eq!(u16::from_be_bytes([close[2], close[3]]), code, "{frame:?}");
        }
    }

    #[tokio::test]
    async fn an_oversized_message_is_announced_by_its_length_before_it_is_read() {
        let (mut raw, b) = tokio::io::duplex(4096);
        let mut server = WsStream::new(b, Role::Server, 1000);
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(Data::Binary),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        let mut wire = BytesMut::new();
        header.format(1_000_000, &mut (&mut wire).writer()).unwrap();
        raw.write_all(&wire).await.unwrap();
        let mut prefix = [0u8; 4];
        server.read_exact(&mut prefix).await.unwrap();
        assert_eq!(u32::from_be_bytes(prefix), 1_000_000);
        assert!(server.buffered_capacity() < 64);
        assert!(server.read(&mut prefix).await.is_err());
        server.shutdown().await.unwrap();
        let mut close = [0u8; 4];
        raw.read_exact(&mut close).await.unwrap();
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009);
    }
}
