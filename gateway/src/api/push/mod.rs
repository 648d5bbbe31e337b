//! Offline push, decided per device.
//!
//! Devices register a push token (APNs or FCM) over HTTP or the binary protocol
//! (`register`); the registration lives in the device's record and lasts while the
//! credential it was made with does (a logout ends it). When a message is stored,
//! [`Push::committed`] appends one record per message to a durable queue
//! (`<data_dir>/push/queue.log`, [`RecordLog`]); the worker ([`Push::run`]) turns each
//! into a pending push per recipient and conversation, which waits
//! `push.coalesce_ms` so that a burst of messages becomes one push. When it is due,
//! each of the recipient's devices with a token is decided on its own:
//! - the sender's own devices, a muted conversation, a blocked sender, a banned user,
//!   a conversation already read past the burst, a device whose credential is gone:
//!   no push;
//! - an online device that acknowledged delivery (`DeliveryAck`) of the burst: none;
//! - an online device that has not within `push.ack_window_ms` of the first message:
//!   one push;
//! - an offline device: one push.
//!
//! A push carries the user's unread total (muted conversations left out) as the
//! badge and collapses per conversation (`apns-collapse-id`, FCM `collapse_key` and
//! `tag`). Reading the conversation on one device cancels pending pushes and
//! withdraws shown ones from the other devices (a background push the app acts on).
//! Tokens the service reports unregistered are removed from the device. Every push
//! sent is marked in the queue (`Sent` records), and a record is acknowledged once
//! everything it caused is decided: a restart resumes from the acknowledged offset
//! and skips what the marks say was sent. The marks are synced with the queue every
//! [`SYNC_EVERY`], so only a push sent in the last few ms before a machine crash can
//! go out again, and it replaces the first on the device (same collapse id).
//! Withdrawals are not queued durably: after a restart, a read does not withdraw
//! notifications shown before it.

pub mod apns;
pub mod fcm;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_protocol::pb::message_body::Content;
use courier_protocol::{pb, ConversationId, ErrorCode};
use courier_storage::{PushProvider, PushToken, StoredMessage, TokenHash};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::config::{Config, PushConfig};
use crate::error::ApiError;
use crate::outbox::RecordLog;

/// How long an appended record may stay only in the page cache.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);
/// Decisions reading the store at once.
const MAX_DECIDING: usize = 64;
/// How long shutdown waits for pushes under way.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Records the worker reads at once.
const READ_BATCH: usize = 256;
/// Attempts of one push while the service asks to retry.
const ATTEMPTS: u32 = 5;
/// Longest preview of a text in a notification, in characters.
const PREVIEW_CHARS: usize = 120;
/// Conversations whose shown notifications are remembered for withdrawal (past
/// it, one is forgotten for each new one).
const MAX_SHOWN: usize = 100_000;

/// What a push says.
#[derive(Debug, Clone)]
pub enum NotificationKind {
    /// New messages: the alert's title and body.
    Message {
        /// The sender (1:1) or the group's name.
        title: String,
        /// The newest message's preview.
        body: String,
    },
    /// The conversation was read elsewhere: remove its notification.
    Withdraw,
}

/// One push to one device, whichever the service.
#[derive(Debug, Clone)]
pub struct Notification {
    /// A stable id (a UUID), the same if it is ever sent again.
    pub id: String,
    /// The conversation (also the collapse id).
    pub conversation: String,
    /// The newest seq it stands for (the read seq for a withdrawal).
    pub seq: u64,
    /// Messages it stands for.
    pub count: u64,
    /// The user's unread total.
    pub badge: u64,
    /// What it says.
    pub kind: NotificationKind,
}

/// How a service answered.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted.
    Sent,
    /// The token is no longer valid (APNs 410, FCM `UNREGISTERED`): remove it.
    Unregistered(String),
    /// Try again later (after the given time, if the service said).
    Retry(String, Option<Duration>),
    /// Refused for good.
    Failed(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PushCounters {
    /// Messages queued for push decisions.
    pub queued: AtomicU64,
    /// Pushes the services accepted.
    pub sent: AtomicU64,
    /// Withdrawals the services accepted.
    pub withdrawn: AtomicU64,
    /// Pushes not sent: acknowledged, read, muted, blocked or logged out.
    pub suppressed: AtomicU64,
    /// Tokens removed because the service reported them unregistered.
    pub tokens_removed: AtomicU64,
    /// Pushes given up (refused, or still failing after retries).
    pub failures: AtomicU64,
    /// Attempts retried.
    pub retries: AtomicU64,
}

/// A record of the push queue.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Record {
    /// A message was stored.
    #[serde(rename = "m")]
    Message {
        c: String,
        seq: u64,
        from: u64,
        preview: String,
    },
    /// A push for `c` up to `seq` was sent to device `d` of user `u`.
    #[serde(rename = "s")]
    Sent {
        u: u64,
        d: String,
        c: String,
        seq: u64,
    },
}

type Key = (u64, ConversationId);

/// Acknowledged seqs per device (and when), per user and conversation.
type AckMap = HashMap<Key, Vec<(Arc<str>, u64, Instant)>>;

/// Stripes of the acknowledgement map (acknowledgements come from every session).
const ACK_STRIPES: usize = 64;

fn ack_stripe(key: &Key) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() as usize % ACK_STRIPES
}

/// Messages waiting to become one push for one recipient.
struct Pending {
    last_seq: u64,
    /// What each sender sent in the burst (a blocked one's part is left out).
    parts: Vec<Part>,
    first_at: Instant,
    due: Instant,
    /// Start offsets of the queue records it stands for.
    offsets: Vec<u64>,
}

/// One sender's messages in a burst.
#[derive(Clone)]
struct Part {
    sender: u64,
    count: u64,
    last_seq: u64,
    preview: String,
}

/// What one push stands for, once blocked senders are left out.
struct Burst {
    last_seq: u64,
    count: u64,
    sender: u64,
    preview: String,
}

#[derive(Default)]
struct State {
    pending: HashMap<Key, Pending>,
    timers: BTreeSet<(Instant, u64, ConversationId)>,
    /// Start offset of each record not yet decided -> how many pushes wait on it.
    unresolved: BTreeMap<u64, usize>,
    /// End of the last record read and registered.
    read_end: u64,
    /// Where everything before is decided: the offset to acknowledge.
    ack_to: u64,
    /// Notifications shown per device, for withdrawal.
    shown: HashMap<Key, Vec<(String, u64)>>,
    /// From the queue's `Sent` marks at start: what was already pushed.
    sent_before: HashMap<(u64, String, ConversationId), u64>,
}

/// The push service: queue, decisions and senders.
pub struct Push {
    log: RecordLog,
    state: Mutex<State>,
    wake: Notify,
    config: PushConfig,
    /// The APNs sender, when configured.
    pub apns: Option<apns::Apns>,
    /// The FCM sender, when configured.
    pub fcm: Option<fcm::Fcm>,
    /// Requests to APNs and FCM in flight at once (`push.concurrency`).
    slots: Semaphore,
    /// Decisions reading the store at once (a big group's message makes many).
    decisions: Semaphore,
    tasks: TaskTracker,
    /// Cancelled at shutdown: decisions and requests under way end.
    stop: CancellationToken,
    /// Recent delivery acknowledgements per device, striped by key.
    acks: Box<[Mutex<AckMap>]>,
    /// The API layer, once [`Push::run`] started.
    api: std::sync::OnceLock<std::sync::Weak<Api>>,
    /// Counters for `/metrics`.
    pub counters: PushCounters,
}

/// Errors starting the push service.
#[derive(Debug, thiserror::Error)]
pub enum PushStartError {
    /// The queue could not be opened.
    #[error("push queue: {0}")]
    Queue(#[from] std::io::Error),
    /// APNs is misconfigured.
    #[error(transparent)]
    Apns(#[from] apns::ApnsConfigError),
    /// FCM is misconfigured.
    #[error(transparent)]
    Fcm(#[from] fcm::FcmConfigError),
    /// The extra root certificates could not be read.
    #[error("push.ca_file: {0}")]
    Ca(String),
}

/// The items of a comma-separated list.
pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A `Retry-After` header in seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

fn http_client(config: &PushConfig, http2_only: bool) -> Result<reqwest::Client, PushStartError> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .pool_idle_timeout(Duration::from_secs(600));
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    if !config.ca_file.is_empty() {
        let pem = std::fs::read(&config.ca_file).map_err(|e| PushStartError::Ca(e.to_string()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| PushStartError::Ca(e.to_string()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| PushStartError::Ca(format!("cannot build the HTTP client: {e}")))
}

/// A UUID-shaped id derived from `parts` (APNs wants `apns-id` as a UUID).
fn stable_id(parts: &str) -> String {
    use sha2::Digest;
    let h = hex::encode(&sha2::Sha256::digest(parts.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What a notification shows of a message body; `None` for what is not pushed
/// (system events such as membership changes and recalls).
fn preview(body: &[u8]) -> Option<String> {
    let body = pb::MessageBody::decode(body).ok()?;
    Some(match body.content? {
        Content::Text(t) => {
            let mut s: String = t.text.chars().take(PREVIEW_CHARS).collect();
            if s.len() < t.text.len() {
                s.push('…');
            }
            s
        }
        Content::Media(m) if m.mime.starts_with("image/") => "[Image]".into(),
        Content::Media(m) if m.mime.starts_with("video/") => "[Video]".into(),
        Content::Media(m) if m.mime.starts_with("audio/") => "[Audio]".into(),
        Content::Media(_) => "[File]".into(),
        Content::Custom(_) => "[Message]".into(),
        Content::System(_) => return None,
    })
}

impl Push {
    /// The push service `config` describes (its queue in `<data_dir>/push/`); `None`
    /// when neither APNs nor FCM is configured.
    pub fn open(config: &Config) -> Result<Option<Self>, PushStartError> {
        let push = &config.push;
        if !push.enabled() {
            return Ok(None);
        }
        let apns = apns::Apns::from_config(push, http_client(push, true)?)?;
        let fcm = fcm::Fcm::from_config(push, http_client(push, false)?)?;
        let log = RecordLog::open(&config.data_dir.join("push"), "queue")?;
        Ok(Some(Self {
            log,
            state: Mutex::default(),
            wake: Notify::new(),
            config: push.clone(),
            apns,
            fcm,
            slots: Semaphore::new(push.concurrency),
            decisions: Semaphore::new(MAX_DECIDING),
            tasks: TaskTracker::new(),
            acks: (0..ACK_STRIPES).map(|_| Mutex::default()).collect(),
            stop: CancellationToken::new(),
            api: std::sync::OnceLock::new(),
            counters: PushCounters::default(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether nothing is pending or being decided (for tests and operators).
    pub fn settled(&self) -> bool {
        self.lock().pending.is_empty() && self.tasks.is_empty()
    }

    /// Queue bytes not yet decided (`/metrics`).
    pub fn backlog_bytes(&self) -> u64 {
        self.log.backlog_bytes()
    }

    /// Queues push decisions for committed messages. Called on the store's commit
    /// path: a write to the page cache, never a wait for APNs or FCM.
    pub fn committed(&self, messages: &[StoredMessage]) {
        let mut records = Vec::new();
        for m in messages {
            if m.recalled.is_some() {
                continue;
            }
            let Some(preview) = preview(&m.body) else {
                continue;
            };
            let record = Record::Message {
                c: m.conversation.to_string(),
                seq: m.seq,
                from: m.sender,
                preview,
            };
            records.push(serde_json::to_vec(&record).expect("records serialize"));
        }
        if records.is_empty() {
            return;
        }
        match self.log.append(&records) {
            Ok(()) => {
                self.counters
                    .queued
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.wake.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "push decisions could not be queued"),
        }
    }

    /// A device acknowledged delivery of `c` up to `seq`. Kept for a while
    /// ([`Push::ack_horizon`]) whether or not a push is pending yet: the
    /// acknowledgement may come before the worker reads the message's record.
    pub fn delivered(&self, user: u64, device: &Arc<str>, c: &ConversationId, seq: u64) {
        let key = (user, *c);
        let mut stripe = self.acks[ack_stripe(&key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let acks = stripe.entry(key).or_default();
        let now = Instant::now();
        match acks.iter_mut().find(|a| a.0 == *device) {
            Some(a) => {
                a.1 = a.1.max(seq);
                a.2 = now;
            }
            None => acks.push((device.clone(), seq, now)),
        }
    }

    /// How long an acknowledgement is kept: past every decision it can matter to.
    fn ack_horizon(&self) -> Duration {
        Duration::from_millis(self.config.coalesce_ms + self.config.ack_window_ms)
            + Duration::from_secs(30)
    }

    /// Forgets acknowledgements older than the horizon.
    fn prune_acks(&self) {
        let Some(oldest) = Instant::now().checked_sub(self.ack_horizon()) else {
            return;
        };
        for stripe in &self.acks {
            let mut stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
            stripe.retain(|_, acks| {
                acks.retain(|a| a.2 >= oldest);
                !acks.is_empty()
            });
        }
    }

    /// `user` read `c` up to `seq` on `from_device`: pending pushes it covers are
    /// cancelled, shown ones withdrawn from the user's other devices.
    pub fn read(
        self: &Arc<Self>,
        user: u64,
        c: &ConversationId,
        seq: u64,
        from_device: Option<&str>,
    ) {
        let key = (user, *c);
        let mut state = self.lock();
        if state.pending.get(&key).is_some_and(|p| p.last_seq <= seq) {
            let p = state.pending.remove(&key).expect("checked");
            state.timers.remove(&(p.due, user, *c));
            self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
            self.resolve(&mut state, &p.offsets);
        }
        drop(state);
        let covered = self.take_shown(key, seq, from_device);
        let Some(api) = self.api.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        if covered.is_empty() {
            return;
        }
        let (push, c) = (self.clone(), *c);
        self.tasks.spawn(async move {
            if let Err(e) = push.withdraw(&api, user, c, seq, covered).await {
                tracing::warn!(user, error = %e, "push withdrawal not sent");
            }
        });
    }

    /// Marks the queue's records at `offsets` decided once more; acknowledges what
    /// is fully decided.
    fn resolve(&self, state: &mut State, offsets: &[u64]) {
        for o in offsets {
            if let Some(n) = state.unresolved.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    state.unresolved.remove(o);
                }
            }
        }
        state.ack_to = match state.unresolved.keys().next() {
            Some(first) => *first,
            None => state.read_end,
        };
    }

    /// Decides and sends until `shutdown`; then waits for the pushes under way and
    /// syncs the queue.
    pub async fn run(self: Arc<Self>, api: Arc<Api>, shutdown: CancellationToken) {
        let _ = self.api.set(Arc::downgrade(&api));
        self.load_marks();
        let push = self.clone();
        let syncer = crate::outbox::spawn_syncer(SYNC_EVERY, shutdown.clone(), move || push.sync());
        let mut pruned = Instant::now();
        loop {
            if pruned.elapsed() > Duration::from_secs(1) {
                self.prune_acks();
                pruned = Instant::now();
            }
            if let Err(e) = self.read_records(&api).await {
                tracing::error!(error = %e, "push queue could not be read");
            }
            let next = self.fire_due(&api).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(1))) => {}
            }
        }
        // Requests under way get a moment to finish (their marks then make the
        // queue); decisions waiting out an ack window are cut short and left to the
        // next start, which resumes from the acknowledged offset.
        self.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.tasks.wait()).await;
        self.stop.cancel();
        self.tasks.wait().await;
        let _ = syncer.await;
        let push = self.clone();
        let _ = tokio::task::spawn_blocking(move || push.sync()).await;
    }

    /// Makes the queue durable and saves how far it is decided (every
    /// [`SYNC_EVERY`], on a blocking thread).
    fn sync(&self) {
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "push queue could not be synced");
            return;
        }
        let ack_to = self.lock().ack_to;
        if let Err(e) = self
            .log
            .acknowledge(ack_to)
            .and_then(|()| self.log.compact().map(drop))
        {
            tracing::error!(error = %e, "push queue offset could not be saved");
        }
    }

    /// Reads the `Sent` marks between the acknowledged offset and the end, so that a
    /// restart does not push again what was pushed.
    fn load_marks(&self) {
        let mut marks = HashMap::new();
        loop {
            let batch = match self.log.read_next(READ_BATCH, 1 << 20) {
                Ok(b) if !b.records.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "push queue could not be read");
                    break;
                }
            };
            for (_, bytes) in batch.records {
                if let Ok(Record::Sent { u, d, c, seq }) = serde_json::from_slice(&bytes) {
                    if let Ok(c) = c.parse::<ConversationId>() {
                        let s = marks.entry((u, d, c)).or_insert(0);
                        *s = seq.max(*s);
                    }
                }
            }
        }
        self.log.rewind();
        let mut state = self.lock();
        state.read_end = self.log.read_position();
        state.ack_to = state.read_end;
        state.sent_before = marks;
    }

    async fn read_records(&self, api: &Arc<Api>) -> std::io::Result<()> {
        loop {
            let batch = self.log.read_next(READ_BATCH, 1 << 20)?;
            if batch.records.is_empty() {
                return Ok(());
            }
            for (end, bytes) in batch.records {
                let start = end - 8 - bytes.len() as u64;
                let record = match serde_json::from_slice::<Record>(&bytes) {
                    Ok(Record::Message {
                        c,
                        seq,
                        from,
                        preview,
                    }) => c
                        .parse::<ConversationId>()
                        .ok()
                        .map(|c| (c, seq, from, preview)),
                    _ => None,
                };
                let recipients = match &record {
                    Some((c, seq, from, _)) => self.recipients(api, c, *seq, *from).await,
                    None => Vec::new(),
                };
                let mut state = self.lock();
                if let Some((c, seq, from, preview)) = record {
                    let now = Instant::now();
                    let due = now + Duration::from_millis(self.config.coalesce_ms);
                    let mut refs = 0;
                    for user in recipients {
                        refs += 1;
                        let key = (user, c);
                        match state.pending.get_mut(&key) {
                            Some(p) => {
                                p.last_seq = p.last_seq.max(seq);
                                match p.parts.iter_mut().find(|part| part.sender == from) {
                                    Some(part) => {
                                        part.count += 1;
                                        part.last_seq = seq;
                                        part.preview.clone_from(&preview);
                                    }
                                    None => p.parts.push(Part {
                                        sender: from,
                                        count: 1,
                                        last_seq: seq,
                                        preview: preview.clone(),
                                    }),
                                }
                                p.offsets.push(start);
                            }
                            None => {
                                state.pending.insert(
                                    key,
                                    Pending {
                                        last_seq: seq,
                                        parts: vec![Part {
                                            sender: from,
                                            count: 1,
                                            last_seq: seq,
                                            preview: preview.clone(),
                                        }],
                                        first_at: now,
                                        due,
                                        offsets: vec![start],
                                    },
                                );
                                state.timers.insert((due, user, c));
                            }
                        }
                    }
                    if refs > 0 {
                        state.unresolved.insert(start, refs);
                    }
                }
                state.read_end = end;
                self.resolve(&mut state, &[]);
            }
        }
    }

    /// Who is pushed about a message of `c` from `from`: its participants but the sender.
    async fn recipients(
        &self,
        api: &Arc<Api>,
        c: &ConversationId,
        seq: u64,
        from: u64,
    ) -> Vec<u64> {
        match *c {
            ConversationId::Direct { low, high } => {
                [low, high].into_iter().filter(|u| *u != from).collect()
            }
            ConversationId::Group(g) => match api.members.members_at(g, seq).await {
                Ok(members) => members.iter().copied().filter(|u| *u != from).collect(),
                Err(e) => {
                    tracing::error!(group = g, error = %e, "cannot load members; no pushes");
                    Vec::new()
                }
            },
        }
    }

    /// Starts the decisions that are due; returns when the next one is.
    async fn fire_due(self: &Arc<Self>, api: &Arc<Api>) -> Option<Instant> {
        loop {
            let (key, pending) = {
                let mut state = self.lock();
                let first = *state.timers.iter().next()?;
                if first.0 > Instant::now() {
                    return Some(first.0);
                }
                state.timers.remove(&first);
                let key = (first.1, first.2);
                match state.pending.remove(&key) {
                    Some(p) => (key, p),
                    None => continue,
                }
            };
            // A decision may wait out an ack window: it holds no send slot meanwhile
            // (those are taken per request, in `deliver`).
            let (push, api) = (self.clone(), api.clone());
            self.tasks.spawn(async move {
                push.decide(&api, key, &pending).await;
                // Cut short by shutdown: left undecided, for the next start.
                if !push.stop.is_cancelled() {
                    let mut state = push.lock();
                    push.resolve(&mut state, &pending.offsets);
                }
            });
        }
    }

    fn acked(&self, key: &Key, device: &str) -> u64 {
        self.acks[ack_stripe(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .and_then(|acks| acks.iter().find(|a| &*a.0 == device).map(|a| a.1))
            .unwrap_or(0)
    }

    /// Decides, device by device, whether `p` is pushed to `user`, and sends.
    /// The devices of `user` with a push registration (`None`: none, or unreadable).
    async fn targets(&self, api: &Arc<Api>, user: u64) -> Option<Vec<(String, PushToken)>> {
        let devices = match api.store.devices(user).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(user, error = %e, "cannot read devices; no push");
                return None;
            }
        };
        let targets: Vec<(String, PushToken)> = devices
            .into_iter()
            .filter_map(|d| Some((d.device_id, d.push?)))
            .collect();
        (!targets.is_empty()).then_some(targets)
    }

    /// Whether `device` of `user` still has the registration `token` with a live
    /// credential (checked again before a retry).
    async fn still_registered(
        &self,
        api: &Arc<Api>,
        user: u64,
        device: &str,
        token: &PushToken,
    ) -> bool {
        let current = self.targets(api, user).await.unwrap_or_default();
        let same = current.iter().any(|(d, t)| d == device && t == token);
        same && self.credential_live(api, token).await
    }

    async fn decide(self: &Arc<Self>, api: &Arc<Api>, key: Key, p: &Pending) -> Option<()> {
        let mut _slot = self.decisions.acquire().await.ok()?;
        let (user, c) = key;
        let suppressed = |n: u64| {
            self.counters.suppressed.fetch_add(n, Ordering::Relaxed);
        };
        let Some(targets) = self.targets(api, user).await else {
            return Some(());
        };
        let Some(burst) = self.burst(api, user, &c, p).await else {
            suppressed(targets.len() as u64);
            return Some(());
        };
        // Online devices get until the ack window's end to acknowledge.
        let window_end = p.first_at + Duration::from_millis(self.config.ack_window_ms);
        let online = |d: &str| api.registry.device_online(user, d);
        let waiting = targets
            .iter()
            .any(|(d, _)| online(d) && self.acked(&key, d) < p.last_seq);
        let (mut targets, burst) = match waiting {
            false => (targets, burst),
            true => {
                // Not held meanwhile: a decision slot is for reading and sending.
                drop(_slot);
                self.or_stop(sleep_until(window_end)).await?;
                _slot = self.decisions.acquire().await.ok()?;
                // What changed meanwhile (a logout, a removed device, a read, a mute)
                // counts.
                let targets = self.targets(api, user).await?;
                let Some(burst) = self.burst(api, user, &c, p).await else {
                    suppressed(targets.len() as u64);
                    return Some(());
                };
                (targets, burst)
            }
        };
        let before = targets.len();
        let sent_before = |d: &str| {
            self.lock()
                .sent_before
                .get(&(user, d.to_owned(), c))
                .is_some_and(|s| *s >= burst.last_seq)
        };
        let mut kept = Vec::new();
        for (d, token) in targets.drain(..) {
            let acked = self.acked(&key, &d) >= burst.last_seq;
            if acked || sent_before(&d) || !self.credential_live(api, &token).await {
                continue;
            }
            kept.push((d, token));
        }
        suppressed((before - kept.len()) as u64);
        if kept.is_empty() {
            return Some(());
        }
        let badge = self.badge(api, user).await;
        let (title, body) = self.text(api, &c, &burst).await;
        for (device, token) in kept {
            let n = Notification {
                id: stable_id(&format!("{user}/{device}/{c}/{}", burst.last_seq)),
                conversation: c.to_string(),
                seq: burst.last_seq,
                count: burst.count,
                badge,
                kind: NotificationKind::Message {
                    title: title.clone(),
                    body: body.clone(),
                },
            };
            if !self.deliver(api, user, &device, &token, &n).await {
                continue;
            }
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let mark = Record::Sent {
                u: user,
                d: device.clone(),
                c: c.to_string(),
                seq: burst.last_seq,
            };
            if let Err(e) = self
                .log
                .append(&[serde_json::to_vec(&mark).expect("records serialize")])
            {
                tracing::error!(error = %e, "push mark could not be queued");
            }
            let mut state = self.lock();
            if state.shown.len() >= MAX_SHOWN && !state.shown.contains_key(&key) {
                // Bounded: some other conversation's notification can no longer be
                // withdrawn (the app still clears it when it opens the conversation).
                if let Some(evicted) = state.shown.keys().next().copied() {
                    state.shown.remove(&evicted);
                }
            }
            let shown = state.shown.entry(key).or_default();
            shown.retain(|(d, _)| *d != device);
            shown.push((device, burst.last_seq));
        }
        // A read that came while the pushes were on their way found nothing shown
        // yet: withdraw what it covers now.
        if let Ok(Some(now)) = api.store.conversation_state(user, &c).await {
            if now.read_seq >= burst.last_seq {
                let covered = self.take_shown(key, now.read_seq, None);
                if !covered.is_empty() {
                    if let Err(e) = self.withdraw(api, user, c, now.read_seq, covered).await {
                        tracing::warn!(user, error = %e, "push withdrawal not sent");
                    }
                }
            }
        }
        Some(())
    }

    /// The devices shown a push of `key` up to `seq` (not `except`), forgotten.
    fn take_shown(&self, key: Key, seq: u64, except: Option<&str>) -> Vec<String> {
        let mut state = self.lock();
        let Some(shown) = state.shown.get_mut(&key) else {
            return Vec::new();
        };
        let (covered, kept): (Vec<_>, Vec<_>) = shown.drain(..).partition(|(_, s)| *s <= seq);
        *shown = kept;
        if shown.is_empty() {
            state.shown.remove(&key);
        }
        covered
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| Some(d.as_str()) != except)
            .collect()
    }

    /// What `p` still stands for to `user`: nothing when the conversation is muted
    /// or read past it, the user banned, or every sender in it blocked (either way).
    async fn burst(
        &self,
        api: &Arc<Api>,
        user: u64,
        c: &ConversationId,
        p: &Pending,
    ) -> Option<Burst> {
        let state = match api.store.conversation_state(user, c).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(user, error = %e, "cannot read the conversation state");
                return None;
            }
        };
        if state.muted
            || state.read_seq >= p.last_seq
            || api.store.is_banned(user).await.unwrap_or(true)
        {
            return None;
        }
        let mut burst: Option<Burst> = None;
        for part in &p.parts {
            if part.last_seq <= state.read_seq {
                continue;
            }
            if part.sender != 0 {
                match api.store.relation(user, part.sender).await {
                    Ok(r) if !r.blocking && !r.blocked_by => {}
                    _ => continue,
                }
            }
            let b = burst.get_or_insert(Burst {
                last_seq: 0,
                count: 0,
                sender: part.sender,
                preview: String::new(),
            });
            b.count += part.count;
            if part.last_seq > b.last_seq {
                b.last_seq = part.last_seq;
                b.sender = part.sender;
                b.preview.clone_from(&part.preview);
            }
        }
        burst
    }

    async fn credential_live(&self, api: &Arc<Api>, token: &PushToken) -> bool {
        let now = courier_storage::now_ms();
        if token.credential_expires_ms > 0 {
            return now < token.credential_expires_ms;
        }
        matches!(
            api.store.token_info_by_hash(&token.credential).await,
            Ok(Some(info)) if info.expires_ms > now
        )
    }

    /// `user`'s unread messages in conversations it has not muted.
    async fn badge(&self, api: &Arc<Api>, user: u64) -> u64 {
        let Ok(list) = api.store.conversations(user).await else {
            return 0;
        };
        let mut total = 0;
        for e in list.iter().filter(|e| !e.state.muted) {
            let read = e.state.read_seq.max(e.state.joined_seq);
            total += api
                .unread(&e.conversation, e.last_seq, read)
                .await
                .unwrap_or_else(|_| e.last_seq.saturating_sub(read));
        }
        total
    }

    /// The notification's title and body.
    async fn text(&self, api: &Arc<Api>, c: &ConversationId, p: &Burst) -> (String, String) {
        let sender = match p.sender {
            0 => None,
            id => match api.store.display_name(id).await.ok().flatten() {
                Some(shown) => Some(shown),
                None => api.store.account(id).await.ok().flatten().map(|a| a.name),
            },
        };
        let body = match (self.config.show_preview, p.count) {
            (true, 1) => p.preview.clone(),
            (true, n) => format!("{} (+{} more)", p.preview, n - 1),
            (false, 1) => "New message".to_owned(),
            (false, n) => format!("{n} new messages"),
        };
        match c {
            ConversationId::Direct { .. } => {
                (sender.unwrap_or_else(|| "Notification".into()), body)
            }
            ConversationId::Group(g) => {
                let group = api
                    .store
                    .group(*g)
                    .await
                    .ok()
                    .flatten()
                    .map_or_else(|| "Group".to_owned(), |i| i.name);
                match (sender, self.config.show_preview) {
                    (Some(s), true) => (group, format!("{s}: {body}")),
                    _ => (group, body),
                }
            }
        }
    }

    /// `f`'s output, or `None` once the service stops.
    async fn or_stop<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            out = f => Some(out),
            _ = self.stop.cancelled() => None,
        }
    }

    /// Sends `n`, retrying while the service asks to; removes a token it reports
    /// unregistered. Returns whether it was accepted.
    async fn deliver(
        &self,
        api: &Arc<Api>,
        user: u64,
        device: &str,
        token: &PushToken,
        n: &Notification,
    ) -> bool {
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            // A retry goes out only while the registration still stands.
            if attempt > 1 && !self.still_registered(api, user, device, token).await {
                return false;
            }
            let slot = self
                .slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let outcome = match (token.provider, &self.apns, &self.fcm) {
                (PushProvider::Apns, Some(apns), _) => self.or_stop(apns.send(token, n)).await,
                (PushProvider::Fcm, _, Some(fcm)) => self.or_stop(fcm.send(token, n)).await,
                _ => Some(Outcome::Failed("the service is not configured".into())),
            };
            drop(slot);
            let Some(outcome) = outcome else {
                return false;
            };
            match outcome {
                Outcome::Sent => return true,
                Outcome::Unregistered(reason) => {
                    tracing::info!(user, device, %reason, "push token unregistered; removed");
                    self.counters.tokens_removed.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = api
                        .store
                        .set_push_token(user, device, None, Some(&token.token))
                        .await
                    {
                        tracing::error!(user, device, error = %e, "cannot remove a push token");
                    }
                    return false;
                }
                Outcome::Retry(why, after) if attempt < ATTEMPTS => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(user, device, %why, "push failed; retrying");
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    let pause = tokio::time::sleep(after.unwrap_or(backoff.mul_f64(jitter)));
                    if self.or_stop(pause).await.is_none() {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Outcome::Retry(why, _) | Outcome::Failed(why) => {
                    tracing::warn!(user, device, %why, "push not sent");
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
        false
    }

    async fn withdraw(
        &self,
        api: &Arc<Api>,
        user: u64,
        c: ConversationId,
        read_seq: u64,
        devices: Vec<String>,
    ) -> Result<(), ApiError> {
        let badge = self.badge(api, user).await;
        for d in api.store.devices(user).await? {
            let Some(token) = d.push.filter(|_| devices.contains(&d.device_id)) else {
                continue;
            };
            let n = Notification {
                id: stable_id(&format!("withdraw/{user}/{}/{c}/{read_seq}", d.device_id)),
                conversation: c.to_string(),
                seq: read_seq,
                count: 0,
                badge,
                kind: NotificationKind::Withdraw,
            };
            if self.deliver(api, user, &d.device_id, &token, &n).await {
                self.counters.withdrawn.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// A push registration as a client asks for it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The service.
    pub provider: PushProvider,
    /// The service's token.
    pub token: String,
    /// Bundle id (APNs) or Firebase project id (FCM).
    pub app_id: String,
    /// APNs development environment.
    pub sandbox: bool,
}

impl Registration {
    /// The registration a `SetPushToken` frame asks for; `None` unregisters.
    pub fn from_frame(f: &pb::SetPushToken) -> Result<Option<Self>, ApiError> {
        if f.token.is_empty() {
            return Ok(None);
        }
        let provider = match pb::PushProvider::try_from(f.provider) {
            Ok(pb::PushProvider::Apns) => PushProvider::Apns,
            Ok(pb::PushProvider::Fcm) => PushProvider::Fcm,
            _ => return Err(ApiError::invalid("provider must be APNS or FCM")),
        };
        Ok(Some(Self {
            provider,
            token: f.token.clone(),
            app_id: f.app_id.clone(),
            sandbox: f.sandbox,
        }))
    }
}

impl Api {
    /// Registers (or with `None` removes) the push token of `user`'s `device_id`,
    /// made with the credential `credential` (expiring at `expires_ms`), durably.
    pub async fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        credential: &TokenHash,
        expires_ms: u64,
        registration: Option<Registration>,
    ) -> Result<bool, ApiError> {
        let push = match registration {
            None => None,
            Some(r) => {
                self.check_registration(&r)?;
                // A Courier token is revoked by the store (logout); an application
                // token is not, so the registration keeps its expiry.
                let courier_token = self.store.token_info_by_hash(credential).await?.is_some();
                if !courier_token && self.app_tokens.is_none() {
                    // Not an application token: a Courier token revoked just now.
                    return Err(ApiError::new(
                        ErrorCode::LoggedOut,
                        "this token was revoked",
                    ));
                }
                Some(PushToken {
                    provider: r.provider,
                    token: r.token,
                    app_id: r.app_id,
                    sandbox: r.sandbox,
                    credential: *credential,
                    credential_expires_ms: if courier_token { 0 } else { expires_ms.max(1) },
                    registered_ms: courier_storage::now_ms(),
                })
            }
        };
        let registered = push.is_some();
        if !self
            .store
            .set_push_token(user, device_id, push, None)
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "no such device: a device is known once it has opened a session",
            ));
        }
        Ok(registered)
    }

    fn check_registration(&self, r: &Registration) -> Result<(), ApiError> {
        let push = self.push.as_ref();
        let token_ok = |allowed: fn(u8) -> bool| {
            !r.token.is_empty()
                && r.token.len() <= courier_storage::MAX_PUSH_TOKEN_BYTES
                && r.token.bytes().all(allowed)
        };
        let app_ok = !r.app_id.is_empty()
            && r.app_id.len() <= courier_storage::MAX_PUSH_APP_ID_BYTES
            && r.app_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !app_ok {
            return Err(ApiError::invalid(
                "app_id must be 1-128 letters, digits, '.', '-' or '_'",
            ));
        }
        match r.provider {
            PushProvider::Apns => {
                let apns = push.and_then(|p| p.apns.as_ref()).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NotImplemented,
                        "this server does not push through APNs",
                    )
                })?;
                if !token_ok(|b| b.is_ascii_hexdigit()) {
                    return Err(ApiError::invalid("an APNs token is hexadecimal"));
                }
                if !apns.accepts_topic(&r.app_id) {
                    return Err(ApiError::invalid(
                        "this server does not push to that bundle id",
                    ));
                }
            }
            PushProvider::Fcm => {
                let fcm = push.and_then(|p| p.fcm.as_ref()).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::NotImplemented,
                        "this server does not push through FCM",
                    )
                })?;
                if !token_ok(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_')) {
                    return Err(ApiError::invalid("malformed FCM registration token"));
                }
                if !fcm.accepts_project(&r.app_id) {
                    return Err(ApiError::invalid(
                        "this server does not push to that Firebase project",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ends the push registrations of `user`'s devices that were made with
    /// `credential` (all of them with `None`): after a logout nothing is pushed.
    pub async fn forget_push_tokens(
        &self,
        user: u64,
        credential: Option<&TokenHash>,
    ) -> Result<(), ApiError> {
        if self.push.is_none() {
            return Ok(());
        }
        for d in self.store.devices(user).await? {
            let Some(p) = d.push else { continue };
            // Made with that credential, or on a device that used it (registered
            // for it from another session).
            if credential.is_none_or(|c| *c == p.credential || d.tokens.contains(c)) {
                self.store
                    .set_push_token(user, &d.device_id, None, Some(&p.token))
                    .await?;
            }
        }
        Ok(())
    }
}
