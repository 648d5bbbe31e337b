//! Shared helpers: a real gateway on ephemeral loopback ports, accounts, raw sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;
pub mod push_server;
pub mod udp_proxy;

use std::time::Duration;

use bytes::BytesMut;
use courier_gateway::{Config, Server};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{decode_frame, encode_frame, FrameCodec, PROTOCOL_VERSION};
use courier_sdk::{Client, ClientOptions, Event, Events, HttpClient, LoginInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub server: Server,
    pub http: HttpClient,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path());
        tweak(&mut config);
        let server = Server::start(config).await.unwrap();
        let http = HttpClient::new(format!("http://{}", server.http_addr()));
        Self {
            server,
            http,
            _dir: dir,
        }
    }

    /// Registers `name` and logs in.
    pub async fn user(&self, name: &str) -> LoginInfo {
        self.http.register(name, "password123").await.unwrap();
        self.http.login(name, "password123").await.unwrap()
    }

    /// An HTTP client with the operator token (for `/metrics`, `/v1/stats`, admin).
    pub fn admin(&self) -> HttpClient {
        self.http
            .clone()
            .with_token(&self.server.api().config.admin_token)
    }

    pub fn http_as(&self, login: &LoginInfo) -> HttpClient {
        self.http.clone().with_token(&login.token)
    }

    pub async fn connect(&self, login: &LoginInfo, device: &str) -> (Client, Events) {
        let options = ClientOptions {
            device_id: device.to_owned(),
            ..ClientOptions::default()
        };
        Client::connect(self.server.tcp_addr(), &login.token, options)
            .await
            .unwrap()
    }

    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.server.tcp_addr()).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Whether a `Courier-Signature` header (`t=<ms>,v1=<hex>`) signs `body` under
/// `secret`, computed here independently of the server's code.
pub fn webhook_signed(secret: &str, header: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let Ok(t_ms) = t.parse::<u64>() else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let recent = courier_storage::now_ms().abs_diff(t_ms) < 60_000;
    recent && hex::decode(v1).is_ok_and(|given| mac.verify_slice(&given).is_ok())
}

/// An HTTP error's status and code; panics on any other error.
pub fn http_code(e: &courier_sdk::SdkError) -> (u16, Option<courier_protocol::ErrorCode>) {
    match e {
        courier_sdk::SdkError::Http { status, .. } => (*status, e.code()),
        other => panic!("not an HTTP error: {other:?}"),
    }
}

/// A message's text (empty for other bodies).
pub fn text_of(m: &pb::Message) -> String {
    m.body
        .as_ref()
        .and_then(|b| b.as_text())
        .unwrap_or_default()
        .to_owned()
}

/// The next message event, skipping others; panics after [`WAIT`].
pub async fn next_message(events: &mut Events) -> pb::Message {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Message(m))) => return *m,
            Ok(Some(Event::Closed)) | Ok(None) => {
                panic!("connection closed while waiting for a message")
            }
            Ok(Some(_)) => continue,
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }
}

/// The code of the next Kick (skipping other events); panics if the connection
/// closes without one or none comes within [`WAIT`].
pub async fn kicked(events: &mut Events) -> courier_protocol::ErrorCode {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Kicked { code, .. }) => return code,
                Some(Event::Closed) | None => panic!("closed without a Kick"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("a Kick in time")
}

/// A bare TCP connection for sending hand-made bytes.
pub struct RawConn {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl RawConn {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
            codec: FrameCodec::new(1 << 20),
        }
    }

    /// Reads frames no larger than `max_frame_bytes` (a larger one fails the test).
    pub fn limit(&mut self, max_frame_bytes: usize) {
        self.codec = FrameCodec::new(max_frame_bytes);
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&encode_frame(frame)).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn hello(&mut self, token: &str) -> Frame {
        self.send(&hello_frame(token, PROTOCOL_VERSION)).await;
        self.recv().await.expect("an answer to Hello")
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(payload) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(decode_frame(payload).unwrap());
                }
                let n = match self.stream.read_buf(&mut self.buf).await {
                    Ok(n) => n,
                    Err(_) => return None,
                };
                if n == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("the server neither answered nor closed in time")
    }

    /// Reads until the server closes; returns every frame it sent.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.recv().await {
            frames.push(f);
        }
        frames
    }
}

pub fn hello_frame(token: &str, version: u32) -> Frame {
    Frame::new(
        1,
        Kind::Hello(pb::Hello {
            protocol_version: version,
            device_id: "raw".into(),
            platform: 0,
            token: token.into(),
            client_version: "test".into(),
            cursors: Vec::new(),
        }),
    )
}

pub fn error_code(frame: &Frame) -> Option<courier_protocol::ErrorCode> {
    match &frame.kind {
        Some(Kind::Error(e)) => courier_protocol::ErrorCode::try_from(e.code).ok(),
        Some(Kind::Kick(k)) => courier_protocol::ErrorCode::try_from(k.code).ok(),
        _ => None,
    }
}

/// Registers and logs in `n` users named `{prefix}{i}`, a few at a time.
pub async fn users(t: &TestServer, prefix: &str, n: usize) -> Vec<LoginInfo> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(0..n)
        .map(|i| {
            let http = t.http.clone();
            let name = format!("{prefix}{i}");
            async move {
                http.register(&name, "password123").await.unwrap();
                http.login(&name, "password123").await.unwrap()
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// Waits for the next event that is a text message, skipping system events and others.
pub async fn next_text(events: &mut Events) -> pb::Message {
    loop {
        let m = next_message(events).await;
        if m.body.as_ref().and_then(|b| b.as_text()).is_some() {
            return m;
        }
    }
}

/// Reads the `{"event":"listening",...}` line a `courier serve` child prints first.
pub async fn listening(child: &mut tokio::process::Child) -> serde_json::Value {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the server printed its addresses in time")
        .unwrap()
        .expect("a listening line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening");
    v
}

/// The unread count of `c` in `http`'s conversation list (0 when it is not listed).
pub async fn unread_in_list(
    http: &courier_sdk::HttpClient,
    c: &courier_sdk::ConversationId,
) -> u64 {
    http.conversations(None, None)
        .await
        .unwrap()
        .conversations
        .into_iter()
        .find(|e| e.conversation == c.to_string())
        .map_or(0, |e| e.unread)
}
