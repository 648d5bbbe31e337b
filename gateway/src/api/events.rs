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

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
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

/// How long an appended event may stay only in the page cache.
pub const SYNC_EVERY: Duration = Duration::from_millis(50);
/// Most events in one delivery.
const MAX_BATCH: usize = 100;
/// Most bytes of events in one delivery.
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// The log starts over once everything is delivered and it has grown past this.
const RESTART_BYTES: u64 = 1 << 20;
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

struct Log {
    file: File,
    /// Bytes appended so far.
    len: u64,
    /// Bytes delivered (and acknowledged) so far.
    delivered: u64,
    /// Appended since the last sync.
    dirty: bool,
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
    log: Mutex<Log>,
    offset_path: PathBuf,
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
        let dir = config.data_dir.join("webhooks");
        std::fs::create_dir_all(&dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join("events.log"))?;
        let len = valid_length(&mut file)?;
        file.set_len(len)?; // a torn last record was never acknowledged to anyone
        let offset_path = dir.join("events.offset");
        let delivered = read_offset(&offset_path)?.min(len);
        let wanted = |name: &str| config.webhook_events.split(',').any(|e| e.trim() == name);
        Ok(Some(Self {
            log: Mutex::new(Log {
                file,
                len,
                delivered,
                dirty: false,
            }),
            offset_path,
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
        let log = self.log.lock().expect("outbox lock");
        log.len - log.delivered
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
        let mut bytes = Vec::new();
        for e in events {
            let json = serde_json::to_vec(e).expect("JSON values serialize");
            bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&json).to_be_bytes());
            bytes.extend_from_slice(&json);
        }
        let mut log = self.log.lock().expect("outbox lock");
        match log.file.write_all(&bytes) {
            Ok(()) => {
                log.len += bytes.len() as u64;
                log.dirty = true;
                self.counters
                    .queued
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            // The disk refused the record: cut it back off, so the log stays whole.
            Err(e) => {
                tracing::error!(error = %e, "webhook events could not be queued");
                let len = log.len;
                let _ = log.file.set_len(len);
            }
        }
        drop(log);
        self.wake.notify_one();
    }

    /// Syncs what was appended (at shutdown, and every [`SYNC_EVERY`]).
    pub fn sync(&self) {
        let mut log = self.log.lock().expect("outbox lock");
        if log.dirty {
            if let Err(e) = log.file.sync_data() {
                tracing::error!(error = %e, "webhook events could not be synced");
                return;
            }
            log.dirty = false;
        }
    }

    /// Delivers until `shutdown`: batches from the acknowledged offset, retried with
    /// backoff while the receiver fails.
    pub async fn run(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let syncer = {
            let outbox = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SYNC_EVERY);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => {
                            let outbox = outbox.clone();
                            let _ = tokio::task::spawn_blocking(move || outbox.sync()).await;
                        }
                    }
                }
            })
        };
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let batch = match self.next_batch() {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "webhook events could not be read");
                    Batch::default()
                }
            };
            if batch.events.is_empty() {
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

    fn next_batch(&self) -> std::io::Result<Batch> {
        let mut log = self.log.lock().expect("outbox lock");
        let (start, end) = (log.delivered, log.len);
        if start == end {
            return Ok(Batch::default());
        }
        let want = (end - start).min(MAX_BATCH_BYTES as u64 + 8) as usize;
        let mut buf = vec![0u8; want];
        log.file.seek(SeekFrom::Start(start))?;
        log.file.read_exact(&mut buf)?;
        drop(log);
        let mut events = Vec::new();
        let mut at = 0usize;
        while events.len() < MAX_BATCH && at + 8 <= buf.len() {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if at + 8 + len > buf.len() {
                if events.is_empty() {
                    // One event larger than a batch's bytes: read it whole.
                    return self.read_one(start, len);
                }
                break;
            }
            events.push(buf[at + 8..at + 8 + len].to_vec());
            at += 8 + len;
        }
        Ok(Batch {
            events,
            end: start + at as u64,
        })
    }

    fn read_one(&self, start: u64, len: usize) -> std::io::Result<Batch> {
        let mut log = self.log.lock().expect("outbox lock");
        let mut buf = vec![0u8; len];
        log.file.seek(SeekFrom::Start(start + 8))?;
        log.file.read_exact(&mut buf)?;
        Ok(Batch {
            events: vec![buf],
            end: start + 8 + len as u64,
        })
    }

    async fn deliver(&self, batch: &Batch) -> Result<(), String> {
        let mut body = Vec::with_capacity(batch.events.iter().map(Vec::len).sum::<usize>() + 32);
        body.extend_from_slice(b"{\"events\":[");
        for (i, e) in batch.events.iter().enumerate() {
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
        let mut log = self.log.lock().expect("outbox lock");
        log.delivered = batch.end;
        if log.delivered == log.len && log.len > RESTART_BYTES && log.file.set_len(0).is_ok() {
            log.len = 0;
            log.delivered = 0;
        }
        let delivered = log.delivered;
        drop(log);
        if let Err(e) = write_offset(&self.offset_path, delivered) {
            tracing::error!(error = %e, "webhook event offset could not be saved");
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .delivered
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Batch {
    events: Vec<Vec<u8>>,
    /// The log offset just past the batch.
    end: u64,
}

/// The length of the whole records at the start of `file`.
fn valid_length(file: &mut File) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(json) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(json) != crc {
            break;
        }
        at += 8 + len;
    }
    Ok(at as u64)
}

fn read_offset(path: &Path) -> std::io::Result<u64> {
    match std::fs::read(path) {
        Ok(b) if b.len() == 8 => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        Ok(_) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Writes the offset atomically (a new file renamed over the old one).
fn write_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let temp = path.with_extension("offset.new");
    let mut file = File::create(&temp)?;
    file.write_all(&offset.to_be_bytes())?;
    file.sync_data()?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_is_not_part_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let json = br#"{"id":"a"}"#;
        file.write_all(&(json.len() as u32).to_be_bytes()).unwrap();
        file.write_all(&crc32fast::hash(json).to_be_bytes())
            .unwrap();
        file.write_all(json).unwrap();
        let whole = 8 + json.len() as u64;
        file.write_all(&[0, 0, 0, 9, 1, 2]).unwrap(); // a torn header
        assert_eq!(valid_length(&mut file).unwrap(), whole);
    }

    #[test]
    fn offsets_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.offset");
        assert_eq!(read_offset(&path).unwrap(), 0);
        write_offset(&path, 4242).unwrap();
        assert_eq!(read_offset(&path).unwrap(), 4242);
    }
}
