//! A resilient session for apps on bad networks.
//!
//! [`Session`] keeps one logical connection alive across network failures:
//! - it reconnects by itself, with exponential backoff and jitter;
//! - sends survive reconnects: each waits in an outbox until the server acknowledges
//!   it, and is resent with the same `client_msg_id`, so it is stored once;
//! - after every (re)connect it syncs from its cursors and pulls what it missed;
//! - it hands the application each message exactly once and in seq order per
//!   conversation: duplicates (by seq) are dropped, gaps are filled by pulling.
//!
//! Cursors live in a [`CursorStore`]; with a [`crate::FileCursorStore`] an app restart
//! resumes where it was.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use courier_protocol::pb::{self, Direction};
use courier_protocol::{ConversationId, ErrorCode};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::client::{new_client_msg_id, Client, ClientOptions, Event, Events, SendReceipt};
use crate::cursor::{CursorStore, MemoryCursorStore};
use crate::error::{Result, SdkError};
use crate::transport::{connect_tls, QuicConnector, Trust};

/// How a [`Session`] behaves.
#[derive(Clone)]
pub struct SessionOptions {
    /// Options of each underlying connection (keep `device_id` stable).
    pub client: ClientOptions,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Where cursors are kept.
    pub cursors: Arc<dyn CursorStore>,
    /// A conversation first seen at seq ≤ this is replayed from its start; one first
    /// seen later starts at that message (older history is for the app to page).
    pub backfill_limit: u64,
    /// Messages per history pull when filling gaps.
    pub page_size: u32,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            cursors: Arc::new(MemoryCursorStore::default()),
            backfill_limit: 1000,
            page_size: 100,
        }
    }
}

/// How a session reaches the server (again and again).
#[derive(Clone)]
pub enum Connector {
    /// Plain TCP to this address.
    Tcp(String),
    /// QUIC through this endpoint (kept, so reconnects can use 0-RTT).
    Quic(QuicConnector, SocketAddr),
    /// Any node of a deployment (failover between them).
    Any(ServerList),
    /// WebSocket at this URL (`ws://host:port/v1/ws`).
    WebSocket(String),
    /// TLS over TCP.
    Tls {
        /// Server address.
        addr: SocketAddr,
        /// How to trust its certificate.
        trust: Trust,
        /// Name checked against the certificate.
        server_name: String,
    },
}

/// The nodes of one deployment, tried in turn: a session stays on the node that
/// answered until it fails, then moves on to the next.
#[derive(Clone)]
pub struct ServerList {
    servers: Arc<[Connector]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
}

impl ServerList {
    /// Tries `servers` in this order (rotating from the last one that worked).
    pub fn new(servers: Vec<Connector>) -> Self {
        Self {
            servers: servers.into(),
            current: Arc::default(),
        }
    }

    /// TCP to each of `addrs`.
    pub fn tcp<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> Self {
        Self::new(
            addrs
                .into_iter()
                .map(|a| Connector::Tcp(a.into()))
                .collect(),
        )
    }

    /// The node the session is on, or will try first.
    pub fn current(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One attempt at each node, from the current one on; the first that takes the
    /// session becomes current. A refusal that no node would answer otherwise (a bad
    /// token) ends the round at once.
    pub async fn connect(&self, token: &str, options: &ClientOptions) -> Result<(Client, Events)> {
        use std::sync::atomic::Ordering;
        let n = self.servers.len();
        if n == 0 {
            return Err(SdkError::Unexpected("the server list is empty".into()));
        }
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            match Box::pin(self.servers[at].connect(token, options.clone())).await {
                Ok(conn) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(e) if fatal(e.code()) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one server was tried"))
    }
}

impl Connector {
    async fn connect(&self, token: &str, options: ClientOptions) -> Result<(Client, Events)> {
        match self {
            Connector::Any(list) => list.connect(token, &options).await,
            Connector::Tcp(addr) => Client::connect(addr.as_str(), token, options).await,
            Connector::WebSocket(url) => Client::connect_ws(url, token, options).await,
            Connector::Quic(quic, addr) => quic.connect(*addr, token, options).await,
            Connector::Tls {
                addr,
                trust,
                server_name,
            } => connect_tls(*addr, trust, server_name, token, options).await,
        }
    }
}

/// What a session tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The next message of a conversation (exactly once, in seq order).
    Message(Box<pb::Message>),
    /// Someone read a conversation.
    ReadReceipt(pb::ReadReceipt),
    /// Presence changes.
    Presence(pb::PresenceBatch),
    /// Someone is typing in a conversation (or stopped).
    Typing(pb::TypingNotice),
    /// This user's view of a conversation changed on another device (messages
    /// deleted for it, history cleared, the conversation deleted).
    Hidden(pb::Hidden),
    /// Someone asks to join a group this user owns or administers.
    JoinRequested(pb::JoinRequested),
    /// Connected (again) and synced.
    Connected,
    /// The connection was lost; reconnecting.
    Disconnected,
    /// The session ended for good (bad token, device removed, replaced, ...).
    Ended(Option<ErrorCode>),
}

/// The application's handle. Cheap to clone; the session ends when all are dropped.
#[derive(Clone)]
pub struct Session {
    cmd: mpsc::Sender<Cmd>,
    user_id: u64,
}

/// The session's event stream.
pub struct SessionEvents {
    rx: mpsc::Receiver<SessionEvent>,
}

impl SessionEvents {
    /// The next event; `None` once the session has ended.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        self.rx.recv().await
    }
}

struct SendCmd {
    conversation: ConversationId,
    body: pb::MessageBody,
    client_msg_id: String,
    reply: oneshot::Sender<Result<SendReceipt>>,
}

enum Cmd {
    Send(Box<SendCmd>),
    Typing(ConversationId, bool),
}

impl Session {
    /// Connects over TCP to `addr` (the first attempt must succeed, so that a bad
    /// token is reported here) and keeps the session alive from then on.
    pub async fn start(
        addr: impl Into<String>,
        token: impl Into<String>,
        options: SessionOptions,
    ) -> Result<(Session, SessionEvents)> {
        Self::start_with(Connector::Tcp(addr.into()), token, options).await
    }

    /// Like [`Self::start`], over TCP to any of `addrs` (the nodes of one
    /// deployment): when the node in use fails, the session moves to the next one,
    /// resends what was not acknowledged and resyncs from its cursors.
    pub async fn start_any<S: Into<String>>(
        addrs: impl IntoIterator<Item = S>,
        token: impl Into<String>,
        options: SessionOptions,
    ) -> Result<(Session, SessionEvents)> {
        Self::start_with(Connector::Any(ServerList::tcp(addrs)), token, options).await
    }

    /// Like [`Self::start`], over any transport.
    pub async fn start_with(
        connector: Connector,
        token: impl Into<String>,
        options: SessionOptions,
    ) -> Result<(Session, SessionEvents)> {
        let token = token.into();
        let first = connector.connect(&token, options.client.clone()).await?;
        let user_id = first.0.user_id();
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (event_tx, event_rx) = mpsc::channel(options.client.event_buffer.max(1));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let cursors = options.cursors.load();
        let driver = Driver {
            connector,
            token,
            device_id: options.client.device_id.clone(),
            user_id,
            options,
            cmd_rx,
            events: event_tx,
            ack_tx,
            ack_rx,
            retry_tx,
            retry_rx,
            outbox: BTreeMap::new(),
            next_order: 0,
            cursors,
            buffers: HashMap::new(),
        };
        tokio::spawn(driver.run(first));
        Ok((
            Session {
                cmd: cmd_tx,
                user_id,
            },
            SessionEvents { rx: event_rx },
        ))
    }

    /// This user's id.
    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    /// Tells the conversation this user is typing (or stopped), while connected
    /// (dropped when offline: typing is ephemeral).
    pub async fn typing(&self, conversation: &ConversationId, active: bool) -> Result<()> {
        self.cmd
            .send(Cmd::Typing(*conversation, active))
            .await
            .map_err(|_| SdkError::Closed(None))
    }

    /// Sends a text; resolves once the server has stored it, however many reconnects
    /// that takes.
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

    /// Sends a message (see [`Self::send_text`]).
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

    /// Queues a send now and returns a future for its receipt. Sends queued one after
    /// another are stored in that order, even when their receipts are awaited
    /// together (concurrent [`Self::send`] calls have no order between them).
    pub async fn submit_send(
        &self,
        conversation: &ConversationId,
        body: pb::MessageBody,
        client_msg_id: String,
    ) -> Result<impl std::future::Future<Output = Result<SendReceipt>> + Send + 'static> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Send(Box::new(SendCmd {
            conversation: *conversation,
            body,
            client_msg_id,
            reply,
        }));
        self.cmd
            .send(cmd)
            .await
            .map_err(|_| SdkError::Closed(None))?;
        Ok(async move { rx.await.map_err(|_| SdkError::Closed(None))? })
    }
}

/// A send waiting for its acknowledgement.
struct Outgoing {
    conversation: ConversationId,
    body: pb::MessageBody,
    client_msg_id: String,
    reply: Option<oneshot::Sender<Result<SendReceipt>>>,
    /// Retryable refusals so far (for the backoff of the next try).
    refusals: u32,
}

enum Held {
    /// Someone's message, to hand over.
    Message(Box<pb::Message>),
    /// This device's own message: advances the cursor, not shown.
    Own,
}

enum End {
    Lost,
    Ended(Option<ErrorCode>),
}

struct Driver {
    connector: Connector,
    token: String,
    device_id: String,
    user_id: u64,
    options: SessionOptions,
    cmd_rx: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<SessionEvent>,
    ack_tx: mpsc::UnboundedSender<(u64, Result<SendReceipt>)>,
    ack_rx: mpsc::UnboundedReceiver<(u64, Result<SendReceipt>)>,
    /// Sends refused for now (rate limit, overload, storage unavailable), due again.
    retry_tx: mpsc::UnboundedSender<u64>,
    retry_rx: mpsc::UnboundedReceiver<u64>,
    outbox: BTreeMap<u64, Outgoing>,
    next_order: u64,
    cursors: HashMap<String, u64>,
    buffers: HashMap<String, BTreeMap<u64, Held>>,
}

/// Errors after which reconnecting cannot help.
fn fatal(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(
            ErrorCode::BadToken
                | ErrorCode::Unauthenticated
                | ErrorCode::UnsupportedVersion
                | ErrorCode::DeviceLimit
                | ErrorCode::LoggedOut
                | ErrorCode::Banned
                | ErrorCode::Replaced
        )
    )
}

impl Driver {
    async fn run(mut self, first: (Client, Events)) {
        let mut next = Some(first);
        let mut backoff = self.options.backoff_initial;
        loop {
            let (client, events) = match next.take() {
                Some(conn) => conn,
                None => match self
                    .connector
                    .connect(&self.token, self.options.client.clone())
                    .await
                {
                    Ok(conn) => {
                        backoff = self.options.backoff_initial;
                        conn
                    }
                    Err(e) if fatal(e.code()) => {
                        self.end(e.code()).await;
                        return;
                    }
                    Err(_) => {
                        let delay = jitter(backoff);
                        backoff = (backoff * 2).min(self.options.backoff_max);
                        if !self.wait(delay).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.serve(client, events).await {
                End::Lost => {
                    let _ = self.events.send(SessionEvent::Disconnected).await;
                }
                End::Ended(code) => {
                    self.end(code).await;
                    return;
                }
            }
        }
    }

    async fn end(&mut self, code: Option<ErrorCode>) {
        for (_, out) in std::mem::take(&mut self.outbox) {
            if let Some(reply) = out.reply {
                let _ = reply.send(Err(SdkError::Closed(
                    code.map(|c| (c, "session ended".into())),
                )));
            }
        }
        let _ = self.events.send(SessionEvent::Ended(code)).await;
    }

    /// Sleeps while taking new sends into the outbox; false once the app is gone.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Cmd::Send(s)) => {
                        self.enqueue(*s);
                    }
                    // Offline: typing is ephemeral, nothing to keep.
                    Some(Cmd::Typing(..)) => {}
                    None => return false,
                },
                // Disconnected: every send in the outbox goes again on reconnect.
                Some(_) = self.retry_rx.recv() => {}
                Some((order, result)) = self.ack_rx.recv() => {
                    self.acked(order, result);
                }
            }
        }
    }

    fn enqueue(&mut self, s: SendCmd) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        self.outbox.insert(
            order,
            Outgoing {
                conversation: s.conversation,
                body: s.body,
                client_msg_id: s.client_msg_id,
                reply: Some(s.reply),
                refusals: 0,
            },
        );
        order
    }

    /// Queues the send on the connection now (so sends leave in the order the app
    /// made them) and waits for its acknowledgement in a task.
    async fn transmit(&self, client: &Client, order: u64) {
        let Some(out) = self.outbox.get(&order) else {
            return;
        };
        let queued = client
            .submit_send(
                &out.conversation,
                out.body.clone(),
                out.client_msg_id.clone(),
            )
            .await;
        let acks = self.ack_tx.clone();
        match queued {
            Ok(answer) => {
                tokio::spawn(async move {
                    let _ = acks.send((order, answer.await));
                });
            }
            Err(e) => {
                let _ = acks.send((order, Err(e)));
            }
        }
    }

    /// An answer to a send: resolve it, or keep it for the next connection (the
    /// resend carries the same `client_msg_id`, so it is stored once).
    fn acked(&mut self, order: u64, result: Result<SendReceipt>) -> Option<SendReceipt> {
        if matches!(
            result,
            Err(SdkError::Closed(_) | SdkError::Timeout | SdkError::Io(_))
        ) {
            return None;
        }
        if let Err(e) = &result {
            if e.is_retryable() {
                // Nothing was stored: the send stays in the outbox and goes again
                // when the server said, or after a growing backoff.
                let out = self.outbox.get_mut(&order)?;
                out.refusals = out.refusals.saturating_add(1);
                let delay = e
                    .retry_after()
                    .unwrap_or_else(|| backoff(&self.options, out.refusals));
                let retry = self.retry_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = retry.send(order);
                });
                return None;
            }
        }
        let mut out = self.outbox.remove(&order)?;
        let receipt = result.as_ref().ok().cloned();
        if let Some(reply) = out.reply.take() {
            let _ = reply.send(result);
        }
        receipt
    }

    async fn serve(&mut self, client: Client, mut events: Events) -> End {
        if let Err(e) = self.resync(&client).await {
            return if fatal(e.code()) {
                End::Ended(e.code())
            } else {
                End::Lost
            };
        }
        let _ = self.events.send(SessionEvent::Connected).await;
        let pending: Vec<u64> = self.outbox.keys().copied().collect();
        for order in pending {
            self.transmit(&client, order).await;
        }
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::Message(m)) => {
                        let conv = m.conversation.clone();
                        let seq = m.seq;
                        let own = m.sender == self.user_id && m.sender_device == self.device_id;
                        let held = if own { Held::Own } else { Held::Message(m) };
                        if self.offer(&conv, seq, held).await && self.fill(&client, &conv).await.is_err() {
                            return End::Lost;
                        }
                    }
                    Some(Event::ReadReceipt(r)) => { let _ = self.events.send(SessionEvent::ReadReceipt(r)).await; }
                    Some(Event::Presence(p)) => { let _ = self.events.send(SessionEvent::Presence(p)).await; }
                    Some(Event::Typing(t)) => { let _ = self.events.send(SessionEvent::Typing(t)).await; }
                    Some(Event::Hidden(h)) => { let _ = self.events.send(SessionEvent::Hidden(h)).await; }
                    Some(Event::JoinRequested(j)) => { let _ = self.events.send(SessionEvent::JoinRequested(j)).await; }
                    Some(Event::Kicked { code, .. }) if fatal(Some(code)) => return End::Ended(Some(code)),
                    Some(Event::Kicked { .. }) | Some(Event::Closed) | None => return End::Lost,
                },
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Cmd::Send(s)) => {
                        let order = self.enqueue(*s);
                        self.transmit(&client, order).await;
                    }
                    Some(Cmd::Typing(c, active)) => { let _ = client.typing(&c, active).await; }
                    None => return End::Ended(None),
                },
                Some(order) = self.retry_rx.recv() => self.transmit(&client, order).await,
                Some((order, result)) = self.ack_rx.recv() => {
                    if let Some(receipt) = self.acked(order, result) {
                        let conv = receipt.conversation.to_string();
                        if self.offer(&conv, receipt.seq, Held::Own).await && self.fill(&client, &conv).await.is_err() {
                            return End::Lost;
                        }
                    }
                }
            }
        }
    }

    /// After a (re)connect: ask what changed since the cursors, pull it, in order.
    async fn resync(&mut self, client: &Client) -> Result<()> {
        let cursors: Vec<pb::Cursor> = self
            .cursors
            .iter()
            .map(|(conversation, seq)| pb::Cursor {
                conversation: conversation.clone(),
                seq: *seq,
            })
            .collect();
        let mut states = Vec::new();
        let mut token = String::new();
        loop {
            let page = client.sync_page(cursors.clone(), 0, token).await?;
            states.extend(page.conversations);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        for state in states {
            if !self.cursors.contains_key(&state.conversation) {
                let start = if state.last_seq <= self.options.backfill_limit {
                    0
                } else {
                    state.last_seq - 1
                };
                self.cursors.insert(state.conversation.clone(), start);
            }
            if state.last_seq > self.cursors[&state.conversation] {
                self.fill(client, &state.conversation).await?;
            }
        }
        Ok(())
    }

    /// Holds `item` at `seq` and hands over everything contiguous from the cursor.
    /// Returns true when a gap remains (something before `seq` is missing).
    async fn offer(&mut self, conv: &str, seq: u64, item: Held) -> bool {
        if self.events.is_closed() {
            return false; // the app stopped listening: nothing is handed over or seen
        }
        let backfill = self.options.backfill_limit;
        let cursor = *self
            .cursors
            .entry(conv.to_owned())
            .or_insert(if seq <= backfill { 0 } else { seq - 1 });
        if seq <= cursor {
            return false; // a duplicate
        }
        let buffer = self.buffers.entry(conv.to_owned()).or_default();
        buffer.insert(seq, item);
        let mut next = cursor;
        let mut ready = Vec::new();
        while let Some(held) = buffer.remove(&(next + 1)) {
            next += 1;
            ready.push((next, held));
        }
        let gap = !buffer.is_empty();
        if buffer.is_empty() {
            self.buffers.remove(conv);
        }
        // The cursor moves past what the app was given, never past what it was not:
        // once the app has dropped its events, nothing more counts as seen (it may
        // still send), so a session started again resumes from here.
        let mut handed = cursor;
        for (seq, held) in ready {
            if let Held::Message(m) = held {
                if self.events.send(SessionEvent::Message(m)).await.is_err() {
                    break;
                }
            }
            handed = seq;
        }
        if handed > cursor {
            self.cursors.insert(conv.to_owned(), handed);
            self.options.cursors.save(conv, handed);
        }
        gap
    }

    /// Pulls forward from the cursor until nothing is missing.
    async fn fill(&mut self, client: &Client, conv: &str) -> Result<()> {
        let c: ConversationId =
            conv.parse()
                .map_err(|e: courier_protocol::ParseConversationError| {
                    SdkError::Unexpected(e.to_string())
                })?;
        loop {
            if self.events.is_closed() {
                return Ok(());
            }
            let cursor = self.cursors.get(conv).copied().unwrap_or(0);
            let page = client
                .pull_history(&c, Direction::Forward, cursor, self.options.page_size)
                .await?;
            let Some(first) = page.messages.first() else {
                // Nothing after the cursor on the server: drop what was waiting for it.
                return Ok(());
            };
            if first.seq > cursor + 1 {
                // Beyond retention: what is gone cannot be handed over; move on.
                self.cursors.insert(conv.to_owned(), first.seq - 1);
            }
            let mut gap = false;
            for m in page.messages {
                let seq = m.seq;
                let own = m.sender == self.user_id && m.sender_device == self.device_id;
                let held = if own {
                    Held::Own
                } else {
                    Held::Message(Box::new(m))
                };
                gap = self.offer(conv, seq, held).await;
            }
            if !page.has_more && !gap {
                return Ok(());
            }
        }
    }
}

/// The wait before the `n`th retry of a refused send: doubling from the first
/// reconnect delay, capped at the longest, with jitter.
fn backoff(options: &SessionOptions, n: u32) -> Duration {
    let doubled = options
        .backoff_initial
        .saturating_mul(1 << n.saturating_sub(1).min(16));
    jitter(doubled.min(options.backoff_max))
}

fn jitter(d: Duration) -> Duration {
    let factor: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    d.mul_f64(factor)
}
