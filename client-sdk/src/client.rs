//! The long-lived connection: Hello/Welcome, requests matched to answers by
//! `request_id`, delivered messages as a stream of [`Event`]s, cumulative delivery
//! acks, heartbeats.
//!
//! Two tasks drive a connection: a reader that decodes frames, resolves pending
//! requests and queues events, and a writer that coalesces outgoing frames and sends
//! heartbeats. Dropping every [`Client`] handle closes the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{
    decode_frame, encode_frame, ConversationId, ErrorCode, FrameCodec, PROTOCOL_VERSION,
};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::error::{Result, SdkError};

/// A device's push registration, for [`Client::set_push_token`].
#[derive(Debug, Clone)]
pub struct PushRegistration {
    /// APNs or FCM.
    pub provider: pb::PushProvider,
    /// The service's token for the app on this device.
    pub token: String,
    /// The bundle id (APNs) or Firebase project id (FCM).
    pub app_id: String,
    /// APNs development environment.
    pub sandbox: bool,
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Stable id of this installation; defaults to a random one.
    pub device_id: String,
    /// What kind of device this is.
    pub platform: pb::Platform,
    /// Largest frame accepted from the server.
    pub max_frame_bytes: usize,
    /// How long a request waits for its answer.
    pub request_timeout: Duration,
    /// Heartbeat interval; `None` uses the server's suggestion from Welcome.
    pub heartbeat_interval: Option<Duration>,
    /// Acknowledge delivered messages automatically (cumulatively, coalesced).
    pub auto_ack: bool,
    /// Events buffered for the application before the connection stops reading.
    pub event_buffer: usize,
    /// Server silence after which the connection counts as dead; `None` uses the
    /// server's idle timeout from Welcome (heartbeats are answered, so a live server
    /// is never silent that long).
    pub silence_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            device_id: random_id("dev"),
            platform: pb::Platform::Unspecified,
            max_frame_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            heartbeat_interval: None,
            auto_ack: true,
            event_buffer: 4096,
            silence_timeout: None,
        }
    }
}

/// Something the server told this client without being asked.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A new message in one of the user's conversations.
    Message(Box<pb::Message>),
    /// Someone read a conversation up to a seq.
    ReadReceipt(pb::ReadReceipt),
    /// Friends came online or went offline.
    Presence(pb::PresenceBatch),
    /// Someone is typing in a conversation (or stopped); it ends by itself after
    /// `expires_ms` without a renewal.
    Typing(pb::TypingNotice),
    /// This user's view of a conversation changed on another of its devices
    /// (messages deleted for it, history cleared, the conversation deleted).
    Hidden(pb::Hidden),
    /// Someone asks to join a group this user owns or administers.
    JoinRequested(pb::JoinRequested),
    /// The server ended the session.
    Kicked {
        /// Why.
        code: ErrorCode,
        /// The server's words.
        reason: String,
    },
    /// The connection is gone (after a Kick, or the network failed).
    Closed,
}

/// What the server answered to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The conversation.
    pub conversation: ConversationId,
    /// The message's seq.
    pub seq: u64,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The client message id the send carried.
    pub client_msg_id: String,
    /// True if the server had stored this message before (a resend).
    pub duplicate: bool,
}

/// Requests waiting for answers; `None` once the connection is gone, so that late
/// requests fail at once instead of waiting for their timeout.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Frame>>>>>;

/// A connected, authenticated client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    out: mpsc::Sender<Bytes>,
    pending: Pending,
    next_request: AtomicU64,
    welcome: pb::Welcome,
    options: ClientOptions,
    /// The newest view version a sync or a `Hidden` told of.
    view_version: AtomicU64,
}

/// The stream of events of one connection.
///
/// Read it, or drop it: while its buffer is full the connection stops reading, so
/// answers to requests wait too.
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection is closed and all events are read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready now.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Client {
    /// Connects over TCP to `addr` and authenticates with `token`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events)> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Self::handshake(reader, writer, token, options).await
    }

    /// Connects over WebSocket, as a browser does (`ws://host:port/v1/ws`), and
    /// authenticates with `token`.
    pub async fn connect_ws(
        url: &str,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events)> {
        let (host, path) = ws_url(url, "ws://")?;
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let ws = courier_protocol::websocket::connect(stream, host, path, options.max_frame_bytes)
            .await
            .map_err(upgrade_error)?;
        let (reader, writer) = tokio::io::split(ws);
        Self::handshake(reader, writer, token, options).await
    }

    /// Runs the handshake over any byte stream halves (TCP, TLS, a QUIC stream, a test pipe).
    pub async fn handshake<R, W>(
        reader: R,
        mut writer: W,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events)>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut frames = FramedRead::new(reader, FrameCodec::new(options.max_frame_bytes));
        let hello = Frame::new(
            1,
            Kind::Hello(pb::Hello {
                protocol_version: PROTOCOL_VERSION,
                device_id: options.device_id.clone(),
                platform: options.platform as i32,
                token: token.to_owned(),
                client_version: concat!("courier-sdk/", env!("CARGO_PKG_VERSION")).to_owned(),
                cursors: Vec::new(),
            }),
        );
        write_flushed(&mut writer, &encode_frame(&hello)).await?;
        let answer = tokio::time::timeout(options.request_timeout, frames.next())
            .await
            .map_err(|_| SdkError::Timeout)?;
        let frame = match answer {
            None => return Err(SdkError::Closed(None)),
            Some(payload) => decode_frame(payload?)?,
        };
        let welcome = match frame.kind {
            Some(Kind::Welcome(w)) => w,
            Some(Kind::Error(e)) => return Err(server_error(&e)),
            Some(Kind::Kick(k)) => {
                return Err(SdkError::Closed(Some((code_of(k.code), k.reason))));
            }
            _ => {
                return Err(SdkError::Unexpected(format!(
                    "{} instead of Welcome",
                    frame.kind_name()
                )))
            }
        };

        let (out_tx, out_rx) = mpsc::channel(1024);
        let (event_tx, event_rx) = mpsc::channel(options.event_buffer.max(1));
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let heartbeat = options.heartbeat_interval.unwrap_or(Duration::from_millis(
            u64::from(welcome.heartbeat_interval_ms).max(50),
        ));
        tokio::spawn(write_loop(writer, out_rx, heartbeat));
        // The reader holds only a weak handle for acks: when the last `Client` is
        // dropped the writer ends, the connection closes, and the reader follows.
        let silence = options.silence_timeout.unwrap_or(Duration::from_millis(
            u64::from(welcome.idle_timeout_ms).max(1000),
        ));
        tokio::spawn(read_loop(
            frames,
            pending.clone(),
            event_tx,
            out_tx.downgrade(),
            options.auto_ack,
            silence,
        ));
        let shared = Arc::new(Shared {
            out: out_tx,
            pending,
            next_request: AtomicU64::new(2),
            welcome,
            options,
            view_version: AtomicU64::new(0),
        });
        Ok((Client { shared }, Events { rx: event_rx }))
    }

    /// This user's id.
    pub fn user_id(&self) -> u64 {
        self.shared.welcome.user_id
    }

    /// What the server said in Welcome.
    pub fn welcome(&self) -> &pb::Welcome {
        &self.shared.welcome
    }

    /// This connection's device id.
    pub fn device_id(&self) -> &str {
        &self.shared.options.device_id
    }

    /// The 1:1 conversation with `peer`.
    pub fn direct_with(&self, peer: u64) -> Result<ConversationId> {
        ConversationId::direct(self.user_id(), peer).ok_or_else(|| {
            SdkError::Unexpected("a conversation with oneself does not exist".into())
        })
    }

    /// Sends a text message with a fresh client message id.
    pub async fn send_text(
        &self,
        conversation: &ConversationId,
        text: impl Into<String>,
    ) -> Result<SendReceipt> {
        self.send(
            conversation,
            pb::MessageBody::text(text),
            new_client_msg_id(),
        )
        .await
    }

    /// Sends a message. Calling it again with the same `client_msg_id` (after a timeout
    /// or a reconnect) is safe: the server stores the message once and answers with
    /// the original seq.
    pub async fn send(
        &self,
        conversation: &ConversationId,
        body: pb::MessageBody,
        client_msg_id: String,
    ) -> Result<SendReceipt> {
        self.submit_send(conversation, body, client_msg_id)
            .await?
            .await
    }

    /// Uploads the file at `path` through `http`, then sends it as a media message.
    pub async fn send_media(
        &self,
        http: &crate::HttpClient,
        conversation: &ConversationId,
        path: impl AsRef<std::path::Path>,
    ) -> Result<(SendReceipt, crate::Media)> {
        let path = path.as_ref();
        let media = http.upload_file(path).await?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let receipt = self
            .send(conversation, media.body(&name), new_client_msg_id())
            .await?;
        Ok((receipt, media))
    }

    /// A page of history over the binary protocol. `cursor` 0 with
    /// [`pb::Direction::Backward`] gives the newest messages.
    pub async fn pull_history(
        &self,
        conversation: &ConversationId,
        direction: pb::Direction,
        cursor: u64,
        limit: u32,
    ) -> Result<pb::HistoryPage> {
        let kind = Kind::PullHistory(pb::PullHistory {
            conversation: conversation.to_string(),
            direction: direction as i32,
            cursor,
            limit,
        });
        match self.request(kind).await? {
            Kind::HistoryPage(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks which conversations changed since `cursors` (empty: all of them); the
    /// first page (see [`Self::sync_page`]).
    pub async fn sync(&self, cursors: Vec<pb::Cursor>) -> Result<pb::SyncResponse> {
        self.sync_page(cursors, 0, String::new()).await
    }

    /// One page of a sync: `limit` conversations (0: the server's default) after
    /// `page_token` (the previous page's `next_page_token`; empty for the first).
    pub async fn sync_page(
        &self,
        cursors: Vec<pb::Cursor>,
        limit: u32,
        page_token: String,
    ) -> Result<pb::SyncResponse> {
        let kind = Kind::SyncRequest(pb::SyncRequest {
            cursors,
            limit,
            page_token,
            view_version: self
                .shared
                .view_version
                .load(std::sync::atomic::Ordering::Relaxed),
        });
        match self.request(kind).await? {
            Kind::SyncResponse(r) => {
                self.shared
                    .view_version
                    .fetch_max(r.view_version, std::sync::atomic::Ordering::Relaxed);
                Ok(r)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Acknowledges every message of `conversation` up to `seq` (not needed with auto-ack).
    pub async fn ack(&self, conversation: &ConversationId, seq: u64) -> Result<()> {
        self.post(Kind::DeliveryAck(pb::DeliveryAck {
            conversation: conversation.to_string(),
            seq,
        }))
        .await
    }

    /// Recalls message `seq` of `conversation`; returns the seq of the recall event.
    pub async fn recall(&self, conversation: &ConversationId, seq: u64) -> Result<u64> {
        let kind = Kind::Recall(pb::Recall {
            conversation: conversation.to_string(),
            seq,
        });
        match self.request(kind).await? {
            Kind::RecallAck(ack) => Ok(ack.event_seq),
            other => Err(unexpected(&other)),
        }
    }

    /// Replaces the text of one's own text message `seq` of `conversation` (within
    /// the server's edit window). Every participant's devices receive the edit event
    /// (a `MessageEdited` system event); history then shows the new text with an
    /// `edited` mark. Returns the acknowledgement (with the edit event's seq).
    pub async fn edit(
        &self,
        conversation: &ConversationId,
        seq: u64,
        text: impl Into<String>,
        mentions: Vec<u64>,
    ) -> Result<pb::EditAck> {
        let kind = Kind::Edit(pb::Edit {
            conversation: conversation.to_string(),
            seq,
            text: Some(pb::Text {
                text: text.into(),
                mentions,
                mention_all: false,
            }),
        });
        match self.request(kind).await? {
            Kind::EditAck(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    /// Reacts to message `seq` of `conversation` with `emoji` (or, `remove`, takes
    /// the reaction back). Participants receive a `ReactionsChanged` system event
    /// (in big groups, one per window for many changes); history shows the counts.
    /// Answers once that event is durable.
    pub async fn react(
        &self,
        conversation: &ConversationId,
        seq: u64,
        emoji: &str,
        remove: bool,
    ) -> Result<pb::ReactAck> {
        let kind = Kind::React(pb::React {
            conversation: conversation.to_string(),
            seq,
            emoji: emoji.to_owned(),
            remove,
        });
        match self.request(kind).await? {
            Kind::ReactAck(ack) => Ok(ack),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes this user's own view of `conversation` on all its devices, nobody
    /// else's: deletes messages `seqs` for it (at most 100), clears its history
    /// through `clear_through` (0: no), or (`delete_conversation`) deletes the
    /// conversation from its list until the next message. The other devices get
    /// [`Event::Hidden`]; history leaves the deleted messages out.
    pub async fn hide(
        &self,
        conversation: &ConversationId,
        seqs: Vec<u64>,
        clear_through: u64,
        delete_conversation: bool,
    ) -> Result<pb::Hidden> {
        let kind = Kind::Hide(pb::Hide {
            conversation: conversation.to_string(),
            seqs,
            clear_through,
            delete_conversation,
        });
        match self.request(kind).await? {
            Kind::Hidden(hidden) => Ok(hidden),
            other => Err(unexpected(&other)),
        }
    }

    /// The view version this client last learnt of (sent with every sync, so the
    /// server lists the conversations whose view changed since; see
    /// [`Self::set_view_version`]).
    pub fn view_version(&self) -> u64 {
        self.shared
            .view_version
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the view version to sync from (one a previous session stored).
    pub fn set_view_version(&self, version: u64) {
        self.shared
            .view_version
            .store(version, std::sync::atomic::Ordering::Relaxed);
    }

    /// Watches `users`' presence for `lease` (for users who are pull-only). The
    /// current state and later changes arrive as [`Event::Presence`].
    pub async fn subscribe_presence(&self, users: Vec<u64>, lease: Duration) -> Result<()> {
        self.post(Kind::PresenceSubscribe(pb::PresenceSubscribe {
            user_ids: users,
            lease_ms: lease.as_millis().min(u128::from(u32::MAX)) as u32,
        }))
        .await
    }

    /// Tells the conversation's other participants this user is typing (`active`)
    /// or stopped. Repeat it every few seconds while typing goes on; the server
    /// forwards at most one per `typing_interval_ms`.
    pub async fn typing(&self, conversation: &ConversationId, active: bool) -> Result<()> {
        self.post(Kind::Typing(pb::Typing {
            conversation: conversation.to_string(),
            active,
        }))
        .await
    }

    /// Registers where to push to this device while it is offline (`provider`
    /// APNs or FCM; `app_id` the bundle id or Firebase project id); `None`
    /// unregisters. Answered once the registration is durable.
    pub async fn set_push_token(&self, token: Option<PushRegistration>) -> Result<()> {
        let frame = match token {
            None => pb::SetPushToken::default(),
            Some(t) => pb::SetPushToken {
                provider: t.provider as i32,
                token: t.token,
                app_id: t.app_id,
                sandbox: t.sandbox,
            },
        };
        match self.request(Kind::SetPushToken(frame)).await? {
            Kind::PushTokenSet(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Reports that the user read `conversation` up to `seq`.
    pub async fn report_read(&self, conversation: &ConversationId, seq: u64) -> Result<()> {
        self.post(Kind::ReadReport(pb::ReadReport {
            conversation: conversation.to_string(),
            seq,
        }))
        .await
    }

    /// Sends a frame that has no answer.
    async fn post(&self, kind: Kind) -> Result<()> {
        self.shared
            .out
            .send(encode_frame(&Frame::new(0, kind)))
            .await
            .map_err(|_| SdkError::Closed(None))
    }

    /// Sends a request frame and waits for its answer (an `Error` answer is an `Err`).
    pub async fn request(&self, kind: Kind) -> Result<Kind> {
        self.submit(kind).await?.await
    }

    /// Queues a request frame now and returns a future for its answer. Requests
    /// submitted one after another go out in that order, however their answers are
    /// awaited (so pipelined sends keep their order).
    pub async fn submit(
        &self,
        kind: Kind,
    ) -> Result<impl std::future::Future<Output = Result<Kind>> + Send + 'static> {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.shared.pending.lock().expect("pending lock").as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(SdkError::Closed(None)),
        };
        let wire = encode_frame(&Frame::new(id, kind));
        if self.shared.out.send(wire).await.is_err() {
            forget(&self.shared.pending, id);
            return Err(SdkError::Closed(None));
        }
        let shared = self.shared.clone();
        Ok(async move {
            let answer = match tokio::time::timeout(shared.options.request_timeout, rx).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(_)) => return Err(SdkError::Closed(None)),
                Err(_) => {
                    forget(&shared.pending, id);
                    return Err(SdkError::Timeout);
                }
            };
            match answer.kind {
                Some(Kind::Error(e)) => Err(server_error(&e)),
                Some(kind) => Ok(kind),
                None => Err(SdkError::Unexpected("answer of an unknown type".into())),
            }
        })
    }

    /// Queues a send now (see [`Self::submit`]) and returns a future for its receipt.
    pub async fn submit_send(
        &self,
        conversation: &ConversationId,
        body: pb::MessageBody,
        client_msg_id: String,
    ) -> Result<impl std::future::Future<Output = Result<SendReceipt>> + Send + 'static> {
        let kind = Kind::Send(pb::Send {
            client_msg_id,
            conversation: conversation.to_string(),
            body: Some(body),
            reply_to_seq: 0,
        });
        let answer = self.submit(kind).await?;
        let conversation = *conversation;
        Ok(async move {
            match answer.await? {
                Kind::SendAck(ack) => Ok(SendReceipt {
                    conversation,
                    seq: ack.seq,
                    server_time_ms: ack.server_time_ms,
                    client_msg_id: ack.client_msg_id,
                    duplicate: ack.duplicate,
                }),
                other => Err(unexpected(&other)),
            }
        })
    }
}

/// Writes `buf` and pushes it out of any buffer the writer keeps (TLS records,
/// WebSocket frames; a no-op on TCP).
async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, buf: &[u8]) -> std::io::Result<()> {
    writer.write_all(buf).await?;
    writer.flush().await
}

/// A failed WebSocket upgrade as the SDK's error.
pub(crate) fn upgrade_error(e: courier_protocol::websocket::UpgradeError) -> SdkError {
    match e {
        courier_protocol::websocket::UpgradeError::Io(e) => SdkError::Io(e),
        refused => SdkError::Unexpected(refused.to_string()),
    }
}

/// The `host:port` and path of a WebSocket URL with `scheme` (`ws://`, `wss://`);
/// the path is `/v1/ws` when it has none.
pub(crate) fn ws_url<'a>(url: &'a str, scheme: &str) -> Result<(&'a str, &'a str)> {
    let rest = url.strip_prefix(scheme).ok_or_else(|| {
        SdkError::Unexpected(format!("{url}: this WebSocket URL starts with {scheme}"))
    })?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, courier_protocol::websocket::WS_PATH),
    })
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Bytes>,
    heartbeat: Duration,
) {
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some(first) = next else { break };
                buf.clear();
                buf.extend_from_slice(&first);
                while buf.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => buf.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                if write_flushed(&mut writer, &buf).await.is_err() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let beat = Frame::new(0, Kind::Heartbeat(pb::Heartbeat { client_time_ms: now_ms() }));
                if write_flushed(&mut writer, &encode_frame(&beat)).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, FrameCodec>,
    pending: Pending,
    events: mpsc::Sender<Event>,
    out: mpsc::WeakSender<Bytes>,
    auto_ack: bool,
    silence: Duration,
) {
    let mut to_ack: HashMap<String, u64> = HashMap::new();
    // The server answers every heartbeat, so silence this long means a dead path
    // (a NAT that forgot us, a network that went away without a reset).
    while let Ok(Some(Ok(payload))) = tokio::time::timeout(silence, frames.next()).await {
        let Ok(frame) = decode_frame(payload) else {
            break;
        };
        let event = match frame.kind {
            Some(Kind::Deliver(d)) => match d.message {
                Some(m) => {
                    if auto_ack {
                        let seq = to_ack.entry(m.conversation.clone()).or_default();
                        *seq = (*seq).max(m.seq);
                    }
                    Some(Event::Message(Box::new(m)))
                }
                None => None,
            },
            Some(Kind::ReadReceipt(r)) => Some(Event::ReadReceipt(r)),
            Some(Kind::PresenceBatch(p)) => Some(Event::Presence(p)),
            Some(Kind::TypingNotice(t)) => Some(Event::Typing(t)),
            Some(Kind::Hidden(h)) if frame.request_id == 0 => Some(Event::Hidden(h)),
            Some(Kind::JoinRequested(j)) => Some(Event::JoinRequested(j)),
            Some(Kind::Kick(k)) => Some(Event::Kicked {
                code: code_of(k.code),
                reason: k.reason,
            }),
            Some(Kind::HeartbeatAck(_)) => None,
            kind => {
                let waiter = pending
                    .lock()
                    .expect("pending lock")
                    .as_mut()
                    .and_then(|p| p.remove(&frame.request_id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Frame {
                        request_id: frame.request_id,
                        kind,
                    });
                }
                None
            }
        };
        if let Some(event) = event {
            // Waits while the application's buffer is full (back pressure); fails only
            // once `Events` is dropped, and requests are still served then.
            let _ = events.send(event).await;
        }
        // Acks go out once the read buffer is drained: one per conversation per burst.
        if !to_ack.is_empty() && frames.read_buffer().is_empty() {
            let out = out.upgrade();
            for (conversation, seq) in to_ack.drain() {
                let ack = Frame::new(0, Kind::DeliveryAck(pb::DeliveryAck { conversation, seq }));
                if let Some(out) = &out {
                    let _ = out.try_send(encode_frame(&ack));
                }
            }
        }
    }
    // Dropping the waiters fails their requests with `Closed`.
    pending.lock().expect("pending lock").take();
    let _ = events.send(Event::Closed).await;
}

fn forget(pending: &Pending, id: u64) {
    if let Some(p) = pending.lock().expect("pending lock").as_mut() {
        p.remove(&id);
    }
}

fn server_error(e: &pb::Error) -> SdkError {
    SdkError::Server {
        code: code_of(e.code),
        message: e.message.clone(),
        retry_after_ms: e.retry_after_ms,
    }
}

fn code_of(code: i32) -> ErrorCode {
    ErrorCode::try_from(code).unwrap_or(ErrorCode::Unspecified)
}

fn unexpected(kind: &Kind) -> SdkError {
    SdkError::Unexpected(format!(
        "{} in answer",
        Frame::new(0, kind.clone()).kind_name()
    ))
}

/// A random client message id.
pub fn new_client_msg_id() -> String {
    random_id("m")
}

fn random_id(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{prefix}-{n:032x}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
