//! A lean receiving client for the load scenarios: a TCP (or WebSocket) connection
//! that says Hello
//! and then reads `Deliver` frames in place ([`courier_protocol::wire::peek_deliver`]),
//! without the SDK's event stream, full decoding or acknowledgements. Where hundreds
//! of receivers share this machine with the server, the SDK's cost per delivery
//! would otherwise set the figure; this path still sees every delivery, so lost,
//! duplicated and out-of-order ones are still counted.

use anyhow::{bail, Context};
use bytes::BytesMut;
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::wire::{peek_deliver, plain_text_body};
use courier_protocol::{decode_frame, encode_frame, FrameCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// One delivery as a receiver sees it.
pub struct Delivery {
    pub seq: u64,
    pub sender: u64,
    /// The text body's first word as a number (the scenarios put the send time in
    /// µs there), if it is one.
    pub stamp: Option<u64>,
}

/// A connection's byte stream: TCP, or TCP under WebSocket framing.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub struct LeanReceiver {
    stream: Box<dyn Stream>,
    codec: FrameCodec,
    buf: BytesMut,
}

impl LeanReceiver {
    /// Connects to `addr` (over WebSocket at `/v1/ws` when `ws`) and authenticates
    /// with `token` as `device`.
    pub async fn connect(
        addr: &str,
        ws: bool,
        token: &str,
        device: String,
    ) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Stream> = match ws {
            false => Box::new(tcp),
            true => Box::new(
                courier_protocol::websocket::connect(
                    tcp,
                    addr,
                    courier_protocol::websocket::WS_PATH,
                    FrameCodec::default().max_frame_bytes(),
                )
                .await?,
            ),
        };
        let hello = Frame::new(
            1,
            Kind::Hello(pb::Hello {
                protocol_version: courier_protocol::PROTOCOL_VERSION,
                device_id: device,
                platform: pb::Platform::Unspecified as i32,
                token: token.to_owned(),
                client_version: "courier-bench/lean".into(),
                cursors: Vec::new(),
            }),
        );
        stream.write_all(&encode_frame(&hello)).await?;
        stream.flush().await?;
        let mut receiver = Self {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let welcome = receiver
            .next_payload()
            .await?
            .context("closed before Welcome")?;
        match decode_frame(welcome)?.kind {
            Some(Kind::Welcome(_)) => Ok(receiver),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    /// The next delivery (other frames are skipped); `None` once the server closes.
    pub async fn next(&mut self) -> anyhow::Result<Option<Delivery>> {
        loop {
            let Some(payload) = self.next_payload().await? else {
                return Ok(None);
            };
            if let Some(view) = peek_deliver(&payload) {
                let stamp = plain_text_body(view.body).and_then(crate::send_stamp);
                return Ok(Some(Delivery {
                    seq: view.seq,
                    sender: view.sender,
                    stamp,
                }));
            }
        }
    }

    async fn next_payload(&mut self) -> anyhow::Result<Option<bytes::Bytes>> {
        loop {
            if let Some(payload) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(payload));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}
