//! Asynchronous webhook events: `after_send` (a message was stored), `group_changed`
//! (a membership or settings event was stored in a group), `user_online` and
//! `user_offline` (a user's first device connected, its last one left), delivered to
//! `webhook_events_url` in batches, signed like every webhook
//! ([`crate::api::webhooks::sign`]).
//!
//! Events go through a durable outbox: each is appended to `<data_dir>/webhooks/
//! events.log` (length, CRC32, JSON) as it happens, synced to disk within
//! [`SYNC_EVERY`] (and at shutdown), and delivered from the last acknowledged offset,
//! which is kept in `events.offset` once the receiver answers 2xx. A receiver that is
//! down or failing is retried with exponential backoff and jitter; nothing is dropped,
//! and a restart resumes from the offset. Delivery is at least once (an answer lost
//! just before a crash is delivered again): every event has a stable `id` to
//! deduplicate by. When everything is delivered, the log starts over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use courier_protocol::pb::message_body::Content;
use courier_protocol::{pb, ConversationId};
use courier_storage::StoredMessage;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::webhooks::post_signed;
use crate::config::Config;
use crate::outbox::{Batch, RecordLog};

/// How long an appended event may stay only in the page cache.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);
/// Most events in one delivery.
const MAX_BATCH: usize = 100;
/// Most bytes of events in one delivery.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Longest wait between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events appended to the outbox.
    pub queued: AtomicU64,
    /// Events the receiver acknowledged.
    pub delivered: AtomicU64,
    /// Delivery attempts that failed (each is retried).
    pub failures: AtomicU64,
    /// Deliveries (batches) acknowledged.
    pub batches: AtomicU64,
}

/// Which events the application wants.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    after_send: bool,
    group_changed: bool,
    presence: bool,
}

/// The durable outbox of webhook events, and its delivery.
pub struct EventOutbox {
    log: RecordLog,
    wake: Notify,
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
    wanted: Wanted,
    /// Counters for `/metrics`.
    pub counters: EventCounters,
    next_id: AtomicU64,
}

impl EventOutbox {
    /// The outbox `config` describes (opened in `<data_dir>/webhooks/`); `None`
    /// when no events URL is set.
    pub fn open(config: &Config) -> std::io::Result<Option<Self>> {
        if config.webhook_events_url.is_empty() {
            return Ok(None);
        }
        let log = RecordLog::open(&config.data_dir.join("webhooks"), "events")?;
        let wanted = |name: &str| config.webhook_events.split(',').any(|e| e.trim() == name);
        Ok(Some(Self {
            log,
            wake: Notify::new(),
            url: config.webhook_events_url.clone(),
            secret: config.webhook_secret.as_bytes().to_vec(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_millis(config.webhook_events_timeout_ms))
                .build()
                .expect("a client with a timeout builds"),
            wanted: Wanted {
                after_send: wanted("after_send"),
                group_changed: wanted("group_changed"),
                presence: wanted("user_online") || wanted("user_offline"),
            },
            counters: EventCounters::default(),
            next_id: AtomicU64::new(0),
        }))
    }

    /// Events not yet acknowledged, in bytes.
    pub fn backlog_bytes(&self) -> u64 {
        self.log.backlog_bytes()
    }

    /// Appends events for committed messages: `after_send` for what people sent,
    /// `group_changed` for the system events of groups. Called on the store's commit
    /// path: a write to the page cache, never a wait for the receiver.
    pub fn committed(&self, messages: &[StoredMessage]) {
        if !self.wanted.after_send && !self.wanted.group_changed {
            return;
        }
        let mut events = Vec::new();
        for m in messages {
            let body = pb::MessageBody::decode(m.body.clone()).unwrap_or_default();
            let system = matches!(body.content, Some(Content::System(_)));
            let group = matches!(m.conversation, ConversationId::Group(_));
            let kind = match (system, group) {
                (false, _) if self.wanted.after_send => "after_send",
                (true, true) if self.wanted.group_changed => "group_changed",
                _ => continue,
            };
            events.push(json!({
                "id": format!("{kind}:{}:{}", m.conversation, m.seq),
                "event": kind,
                "conversation": m.conversation.to_string(),
                "seq": m.seq,
                "sender": m.sender,
                "sender_device": m.sender_device,
                "client_msg_id": m.client_msg_id,
                "server_time_ms": m.server_time_ms,
                "body": crate::api::convert::body_json(&body),
            }));
        }
        self.append(&events);
    }

    /// Appends `user_online` or `user_offline` for `user`.
    pub fn presence(&self, user: u64, online: bool) {
        if !self.wanted.presence {
            return;
        }
        let kind = if online {
            "user_online"
        } else {
            "user_offline"
        };
        let now = courier_storage::now_ms();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.append(&[json!({
            "id": format!("{kind}:{user}:{now}:{n}"),
            "event": kind,
            "user_id": user,
            "time_ms": now,
        })]);
    }

    fn append(&self, events: &[Value]) {
        if events.is_empty() {
            return;
        }
        let records: Vec<Vec<u8>> = events
            .iter()
            .map(|e| serde_json::to_vec(e).expect("JSON values serialize"))
            .collect();
        match self.log.append(&records) {
            Ok(()) => {
                self.counters
                    .queued
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "webhook events could not be queued"),
        }
        self.wake.notify_one();
    }

    /// Syncs what was appended (at shutdown, and every [`SYNC_EVERY`]).
    pub fn sync(&self) {
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "webhook events could not be synced");
        }
    }

    /// Delivers until `shutdown`: batches from the acknowledged offset, retried with
    /// backoff while the receiver fails.
    pub async fn run(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let outbox = self.clone();
        let syncer =
            crate::outbox::spawn_syncer(SYNC_EVERY, shutdown.clone(), move || outbox.sync());
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let batch = match self.log.read_next(MAX_BATCH, MAX_BATCH_BYTES) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "webhook events could not be read");
                    Batch::default()
                }
            };
            if batch.records.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            match self.deliver(&batch).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.acknowledged(&batch);
                }
                Err(why) => {
                    self.log.rewind();
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %self.url, %why, "webhook events not delivered; retrying");
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let _ = syncer.await;
        let outbox = self.clone();
        let _ = tokio::task::spawn_blocking(move || outbox.sync()).await;
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), String> {
        let mut body =
            Vec::with_capacity(batch.records.iter().map(|r| r.1.len()).sum::<usize>() + 32);
        body.extend_from_slice(b"{\"events\":[");
        for (i, (_, e)) in batch.records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        post_signed(&self.client, &self.url, &self.secret, body)
            .await
            .map(drop)
    }

    fn acknowledged(&self, batch: &Batch) {
        if let Some(end) = batch.end() {
            if let Err(e) = self
                .log
                .acknowledge(end)
                .and_then(|()| self.log.compact().map(drop))
            {
                tracing::error!(error = %e, "webhook event offset could not be saved");
            }
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .delivered
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
    }
}
