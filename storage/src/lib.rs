//! Courier's storage: the capability traits every backend implements ([`Storage`]
//! and its parts), the domain rules they share, and the embedded backend: sharded
//! sled databases behind per-shard commit logs.
//!
//! # Layout
//! - `backend`: the capability traits, in domain terms ([`MessageLog`],
//!   [`ConversationIndex`], [`Accounts`], [`Tokens`], [`Devices`], [`Relations`],
//!   [`Groups`], [`MediaRecords`], [`Retention`], [`Operations`]); the gateway holds
//!   an `Arc<dyn Storage>`.
//! - [`Store`]: the embedded backend's handle; cheap to clone. `sled_backend` maps
//!   the traits onto it; [`ManagedStore`] is a `Store` that reopens itself after
//!   its indexes failed a write (a full disk), as the server runs it.
//! - `writer`: one thread per shard that assigns seqs and group-commits appends and
//!   operations; `commitlog`: the shard's append-only log that makes them durable;
//!   `segments`: the log's segments kept as the message store, indexed (in memory
//!   for the segment being written, in an index file and sled runs once sealed),
//!   with the idempotency window, recall erasure and retention's reclaiming.
//! - `ops`: operations other than appends as log records, applied the same way live
//!   and at replay; `group_changes`: group changes planned in log order, by the
//!   rules of `group_rules` (as `relation_rules` holds those of relations): the
//!   domain rules any backend reuses.
//! - `relation_rules`: the rules of friendships, follows and blocks, for any backend.
//! - `keys` / `record`: how keys and values are laid out on disk.
//! - `accounts`: user names, Argon2id password hashes.
//! - `tokens`: login tokens, the devices they were used from, revocation, sweeping.
//! - `conversations`: history pages, the per-user index and read cursors.
//!
//! A conversation's log lives on the shard its id hashes to; user-scoped data on the
//! shard of the user id. The shard count is written to `courier-store.meta` when the
//! data directory is created and must match on every later open.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod backend;
mod bans;
mod commitlog;
mod config;
mod conversations;
pub mod credentials;
mod devices;
mod error;
mod group_changes;
pub mod group_rules;
mod groups;
mod hidden;
mod invitations;
mod keys;
mod managed;
mod media;
mod ops;
mod profiles;
mod reactions;
mod recall;
mod record;
mod relation_rules;
mod relations;
mod retention;
mod segments;
mod shard;
mod sled_backend;
mod stats;
mod tokens;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use courier_protocol::ConversationId;
use tokio::sync::{mpsc, oneshot};

pub use accounts::{Account, Session};
pub use backend::{
    Accounts, ConversationIndex, Devices, Groups, MediaRecords, MessageLog, Operations, Reactions,
    Relations, Retention, Storage, Tokens,
};
pub use bans::{
    validate_join_request, Ban, JoinRequest, MAX_JOIN_REQUEST_MESSAGE_BYTES,
    MAX_PENDING_JOIN_REQUESTS,
};
pub use config::{PasswordParams, StoreConfig};
pub use conversations::{HistoryPage, HistoryRange, UserConversation};
pub use devices::{
    remember_token, Bound, Device, PushProvider, PushToken, MAX_DEVICE_TOKENS,
    MAX_PUSH_APP_ID_BYTES, MAX_PUSH_TOKEN_BYTES,
};
pub use error::{Result, StorageError};
pub use group_changes::{
    creation_refused, validate_new_group, EventsFor, GroupChange, GroupChanged, GroupEvent,
    MAX_ADDED_PER_CHANGE,
};
pub use groups::{
    validate_group_name, AddedMembers, GroupInfo, JoinPolicy, Member, MembershipRefusal, Role,
};
pub use groups::{Announcement, MAX_ANNOUNCEMENT_BYTES, MAX_GROUP_DESCRIPTION_BYTES};
pub use hidden::{HiddenView, MAX_HIDE_AT_ONCE};
pub use invitations::{Invitation, MAX_PENDING_INVITATIONS};
pub use managed::ManagedStore;
pub use media::{BlobRecord, BlobStatus, BlobUpdate};
pub use profiles::{search_key, Profile, MAX_CUSTOM_FIELDS, MAX_STATUS_BYTES};
pub use reactions::{
    validate_emoji, Reacted, ReactionChange, ReactionCount, ReactionEventFn, ReactionTotal,
    MAX_EMOJI_BYTES,
};
pub use recall::{EditRefusal, RecallRefusal};
pub use record::{ConversationState, Edited, Recall, StoredMessage, MAX_MENTIONS, MENTION_ALL};
pub use relation_rules::{
    befriend, Relation, RelationChange, RelationRefusal, RelationSet, RequestOutcome,
};
pub use stats::{CommitStats, Histogram};
pub use tokens::{token_hash, TokenHash, TokenInfo};

use commitlog::CommitLog;
use segments::Segments;
use shard::{ShardDb, ShardMap};
use writer::{Command, OpsRequest, Writer};

/// Longest accepted client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 128;
/// Longest accepted device id, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;

const LOCK_STRIPES: usize = 256;
const META_FILE: &str = "courier-store.meta";
/// 2: messages live in the commit log's segments, not in sled (format 1 stores are
/// not read: start them on a fresh data directory).
const FORMAT_VERSION: u32 = 2;

/// Called by a shard's fan-out thread with each batch of newly committed messages, in
/// seq order per conversation, after they are durable and before their appends are
/// acknowledged. Should not block for long: the shard's next batches wait for it.
pub trait CommitListener: Send + Sync + 'static {
    /// `messages` were stored by one group commit (resends of stored messages
    /// excluded). A commit that changed a group's membership carries only that
    /// change's events, and `membership` says who joined and who left: the events go
    /// to the members before the change as well as after, and anything committed
    /// later goes to the members after it.
    fn committed(&self, messages: &[StoredMessage], membership: Option<&MembershipChange>);

    /// The store reopened after its indexes failed: the replay of its logs may have
    /// applied changes (a group's membership, say) that no `committed` call
    /// reported, so whatever the listener keeps about the store must be read again.
    fn reopened(&self) {}
}

/// Who joined and who left a group in one committed operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// The group.
    pub group: u64,
    /// Members added (or the group's creator and first members).
    pub added: Vec<u64>,
    /// Members removed (or who left).
    pub removed: Vec<u64>,
}

/// A message to append to a conversation log.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The conversation; the caller has checked that the sender may write to it.
    pub conversation: ConversationId,
    /// The sending user.
    pub sender: u64,
    /// The sending device.
    pub sender_device: String,
    /// Unique per sender: a second append with the same id is not stored again.
    pub client_msg_id: String,
    /// The encoded message body.
    pub body: Bytes,
    /// The seq this message replies to, or 0.
    pub reply_to_seq: u64,
    /// Non-zero: this message is the recall event of message `recalls`, whose
    /// content is erased in the same commit (both or neither, after any crash).
    pub recalls: u64,
    /// The users the message mentions ([`MENTION_ALL`] for everyone), as the caller
    /// decided them (at most [`MAX_MENTIONS`]). For an edit event (`edits`): whom the
    /// edited message mentions from now on; the event itself is counted for nobody.
    pub mentions: Vec<u64>,
    /// Set: this message is an edit event of an earlier message, which reads with
    /// this event's body as its latest edit from this commit on.
    pub edits: Option<EditOf>,
}

/// The message an edit event edits, and what happens to its earlier versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditOf {
    /// The edited message's seq.
    pub target: u64,
    /// False: the earlier versions (the original body and earlier edit events) are
    /// erased in the same commit, as a recall erases a message.
    pub keep_versions: bool,
}

impl AppendRequest {
    /// Checks the ids' limits (every backend refuses the same requests).
    pub fn validate(&self) -> Result<()> {
        if self.client_msg_id.is_empty() || self.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
            return Err(StorageError::InvalidArgument(
                "client_msg_id must be 1..=128 bytes",
            ));
        }
        if self.sender_device.len() > MAX_DEVICE_ID_BYTES {
            return Err(StorageError::InvalidArgument(
                "device id must be at most 128 bytes",
            ));
        }
        if self.mentions.len() > MAX_MENTIONS {
            return Err(StorageError::InvalidArgument(
                "a message may carry at most 100 mentions",
            ));
        }
        Ok(())
    }
}

/// The result of an append: durable once returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's seq in its conversation.
    pub seq: u64,
    /// When it was first stored.
    pub server_time_ms: u64,
    /// True when the append repeated an earlier one and returned its seq.
    pub duplicate: bool,
}

/// The pending outcome of a submitted append.
#[derive(Debug)]
pub struct AppendTicket(oneshot::Receiver<Result<Appended>>);

impl AppendTicket {
    /// A ticket resolved by whatever `rx`'s sender sends (how a backend hands out
    /// tickets for appends it completes later).
    pub fn from_receiver(rx: oneshot::Receiver<Result<Appended>>) -> Self {
        Self(rx)
    }

    /// Waits until the append is durable (or failed).
    pub async fn wait(self) -> Result<Appended> {
        self.0.await.map_err(|_| StorageError::ShuttingDown)?
    }
}

/// Handle to the store. Clones share the same shards and writer threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    map: ShardMap,
    shards: Arc<[ShardDb]>,
    queues: Vec<mpsc::Sender<Command>>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    /// Striped locks serialising changes to one friend pair or one group.
    locks: Box<[Mutex<()>]>,
    /// Striped locks of users' device records: held while a binding is read,
    /// changed and committed, which an async caller awaits without a thread.
    device_locks: Box<[tokio::sync::Mutex<()>]>,
    stats: Arc<CommitStats>,
    /// A password hash to verify against when a login names no account.
    dummy_hash: credentials::DummyHash,
    /// Flushes the indexes now and then so that the commit logs can be cut.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Per shard: the log position whose effects are all in the indexes (in memory).
    applied: Arc<[AtomicU64]>,
    /// Per shard: the log position every shard's indexes are flushed up to.
    checkpointed: Arc<[AtomicU64]>,
    /// Per shard: the message store (its log segments, indexed).
    segments: Arc<[Segments]>,
}

/// A thread that flushes every shard's indexes every interval and then publishes, per
/// shard, the log position they are durable up to (read before the flush began): the
/// writers delete the log segments before it.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    fn start(
        shards: Arc<[ShardDb]>,
        segments: Arc<[Segments]>,
        applied: Arc<[AtomicU64]>,
        checkpointed: Arc<[AtomicU64]>,
        stats: Arc<CommitStats>,
        every: std::time::Duration,
    ) -> Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("courier-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let positions: Vec<u64> =
                        applied.iter().map(|a| a.load(Ordering::Acquire)).collect();
                    // Every shard: a record's effects may reach other shards' indexes.
                    let flushed = shards.iter().try_for_each(|s| s.db.flush().map(drop));
                    // The mark made durable too before any segment goes: an open
                    // replays from the mark, and needs every segment after it.
                    let flushed = flushed.and_then(|()| {
                        mark_checkpoint(&shards, &positions);
                        shards.iter().try_for_each(|s| s.db.flush().map(drop))
                    });
                    match flushed {
                        Ok(()) => {
                            for (done, position) in checkpointed.iter().zip(&positions) {
                                done.fetch_max(*position, Ordering::Release);
                            }
                            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                            // Recalled messages now before the checkpoint lose their
                            // bodies on disk too.
                            for (index, position) in positions.iter().enumerate() {
                                let log = &shards[index].log;
                                if let Err(e) = segments[index].erase_recalled(log, *position) {
                                    tracing::warn!(shard = index, error = %e, "cannot erase recalled messages yet");
                                }
                            }
                        }
                        // sled takes no writes after a failed one.
                        Err(e) => stats.note_indexes_failed(&e),
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` and starts one writer thread
    /// per shard. `listener` hears of every committed message.
    pub fn open(config: StoreConfig, listener: Option<Arc<dyn CommitListener>>) -> Result<Self> {
        Self::open_with_stats(config, listener, Arc::default())
    }

    /// [`Store::open`], counting into `stats` (kept across the reopens of a
    /// [`ManagedStore`]).
    ///
    /// If the replayed log cannot be flushed to the indexes (the disk is full), the
    /// store opens all the same, serving reads from what was replayed and refusing
    /// writes ([`CommitStats::indexes_failed`]) until it is opened again.
    pub(crate) fn open_with_stats(
        config: StoreConfig,
        listener: Option<Arc<dyn CommitListener>>,
        stats: Arc<CommitStats>,
    ) -> Result<Self> {
        if config.shards == 0 || config.shards > 1024 {
            return Err(StorageError::InvalidArgument("shards must be 1..=1024"));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        check_meta(&config.data_dir, config.shards)?;
        let per_shard_cache = (config.cache_bytes / config.shards as u64).max(1 << 20);
        // Side by side: sled reads through its whole log at open, which is most of a
        // restart's time on a large store.
        let shards: Arc<[ShardDb]> = std::thread::scope(|scope| {
            let opening: Vec<_> = (0..config.shards)
                .map(|i| {
                    let path = config.data_dir.join(format!("shard-{i:03}"));
                    let flush_every_ms = config.index_flush_every_ms;
                    scope.spawn(move || ShardDb::open(&path, per_shard_cache, flush_every_ms))
                })
                .collect();
            opening
                .into_iter()
                .map(|h| h.join().expect("shard open thread"))
                .collect::<Result<Vec<_>>>()
        })?
        .into();
        let map = ShardMap {
            count: config.shards,
        };
        // A fresh start: whatever an earlier open of this data directory counted as
        // failing is what this open finds out again.
        stats.unwritable_shards.store(0, Ordering::Relaxed);
        stats.indexes_failed.store(false, Ordering::Release);
        // Each shard's commit log: what its indexes may lack is applied again first.
        let mut logs = Vec::with_capacity(config.shards);
        let mut positions = Vec::with_capacity(config.shards);
        let mut tails = Vec::with_capacity(config.shards);
        for index in 0..config.shards {
            let held = match shards[index].log.get(keys::APPLIED)? {
                Some(v) => writer::decode_u64(&v).ok_or(StorageError::Corrupt("applied"))?,
                None => 0,
            };
            let dir = config
                .data_dir
                .join(format!("shard-{index:03}"))
                .join("commitlog");
            let (log, recovered, kept) = CommitLog::open(&dir, held, config.segment_bytes)?;
            positions.push((held, log.end()));
            logs.push((log, kept));
            tails.push(recovered);
        }
        // Two passes over every log (see `ops`): joins and leaves of all logs
        // before any cursor or flag change.
        let mut deferred = Vec::new();
        for (index, recovered) in tails.iter().enumerate() {
            deferred.extend(writer::replay(&shards, map, index, recovered)?);
            if !recovered.is_empty() {
                tracing::info!(
                    shard = index,
                    records = recovered.len(),
                    "commit log replayed"
                );
            }
            stats
                .replayed
                .fetch_add(recovered.len() as u64, Ordering::Relaxed);
        }
        for op in deferred {
            op.apply(&shards, map)?;
        }
        if tails.iter().any(|t| !t.is_empty()) {
            // What was replayed is on disk before the checkpoint says so; if it
            // cannot be, the logs stay as they are and the next open replays them.
            let flushed = (|| -> Result<()> {
                for shard in shards.iter() {
                    shard.db.flush()?;
                }
                for (shard, &(_, end)) in shards.iter().zip(&positions) {
                    shard.log.insert(keys::APPLIED, &end.to_be_bytes())?;
                    shard.db.flush()?;
                }
                Ok(())
            })();
            match flushed {
                Ok(()) => {
                    for (held, end) in &mut positions {
                        *held = *end;
                    }
                }
                Err(e) if e.is_unavailable() => stats.note_indexes_failed(&e),
                Err(e) => return Err(e),
            }
        }
        drop(tails);
        let applied: Arc<[AtomicU64]> = positions
            .iter()
            .map(|&(_, end)| AtomicU64::new(end))
            .collect();
        let checkpointed: Arc<[AtomicU64]> = positions
            .iter()
            .map(|&(held, _)| AtomicU64::new(held))
            .collect();
        let activity = Arc::new(AtomicU64::new(activity_high_water(&shards)?));
        // Each shard's message store: the segments indexed (those the last run left
        // unsealed are sealed now), the idempotency window filled.
        let mut stores = Vec::with_capacity(config.shards);
        let mut windows = Vec::with_capacity(config.shards);
        for (index, (log, kept)) in logs.iter().enumerate() {
            let (store, window) = Segments::open(
                log.dir(),
                &shards[index].log,
                kept,
                log.active_start(),
                config.idempotency_window,
                config.shards,
            )?;
            stores.push(store);
            windows.push(window);
        }
        let segments: Arc<[Segments]> = stores.into();
        let mut queues = Vec::with_capacity(config.shards);
        let mut writers = Vec::with_capacity(config.shards);
        for (index, ((log, _), idem)) in logs.into_iter().zip(windows).enumerate() {
            let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
            let writer = Writer {
                index,
                shards: shards.clone(),
                map,
                fanout: writer::FanOut::start(index, listener.clone())?,
                max_batch: config.max_batch.max(1),
                seq_cache_entries: config.seq_cache_entries.max(16),
                seq_cache: Default::default(),
                stats: stats.clone(),
                activity: activity.clone(),
                log,
                segments: segments.clone(),
                idem,
                sent_marks: Default::default(),
                applied: applied.clone(),
                failing: false,
                member_cache: HashMap::new(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("courier-writer-{index}"))
                .spawn(move || writer.run(rx))?;
            queues.push(tx);
            writers.push(handle);
        }
        let checkpointer = config
            .checkpoint_interval
            .map(|every| {
                Checkpointer::start(
                    shards.clone(),
                    segments.clone(),
                    applied.clone(),
                    checkpointed.clone(),
                    stats.clone(),
                    every,
                )
            })
            .transpose()?;
        let store = Self {
            inner: Arc::new(Inner {
                config,
                map,
                shards,
                queues,
                writers: Mutex::new(writers),
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                device_locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                stats,
                dummy_hash: credentials::DummyHash::default(),
                checkpointer: Mutex::new(checkpointer),
                applied,
                checkpointed,
                segments,
            }),
        };
        store.build_display_name_index()?;
        Ok(store)
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Appends a message to its conversation log and returns once it is durable.
    ///
    /// Waits (asynchronously) while the shard's queue is full: that is the back
    /// pressure that reaches the sending connection.
    pub async fn append(&self, req: AppendRequest) -> Result<Appended> {
        self.submit(req).await?.wait().await
    }

    /// Queues an append and returns a ticket for its outcome. Appends submitted one
    /// after another from one task get increasing seqs in their conversation, even
    /// when their tickets are awaited concurrently.
    pub async fn submit(&self, req: AppendRequest) -> Result<AppendTicket> {
        req.validate()?;
        let shard = self.inner.map.conversation(&req.conversation);
        let (tx, rx) = oneshot::channel();
        self.inner.queues[shard]
            .send(Command::Append(req, tx))
            .await
            .map_err(|_| StorageError::ShuttingDown)?;
        Ok(AppendTicket(rx))
    }

    /// Group-commit counters and histograms.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    /// Whether every shard can write (no group commit is failing now).
    pub fn writable(&self) -> bool {
        self.inner.stats.unwritable_shards.load(Ordering::Relaxed) == 0 && !self.indexes_failed()
    }

    /// Whether the indexes failed a write: the store refuses writes until it is
    /// opened again (what [`ManagedStore`] does by itself).
    pub fn indexes_failed(&self) -> bool {
        self.inner.stats.indexes_failed.load(Ordering::Acquire)
    }

    /// A handle that is dead once every handle to this store's indexes is gone
    /// (sled's lock on the data directory is released then).
    pub(crate) fn indexes_weak(&self) -> std::sync::Weak<[ShardDb]> {
        Arc::downgrade(&self.inner.shards)
    }

    /// Appends that wait in the writer queues right now (all shards).
    pub fn queued(&self) -> usize {
        self.inner
            .queues
            .iter()
            .map(|q| q.max_capacity() - q.capacity())
            .sum()
    }

    /// Flushes every shard to disk.
    pub fn flush(&self) -> Result<()> {
        for shard in self.inner.shards.iter() {
            shard.db.flush()?;
        }
        Ok(())
    }

    /// Stops taking appends, lets each writer finish what is queued before this call,
    /// and flushes every shard.
    ///
    /// Blocks until the writers are done; call it from a blocking context (not from
    /// inside an async task). Appends made after this fail with
    /// [`StorageError::ShuttingDown`]. Calling it twice is harmless.
    pub fn shutdown(&self) -> Result<()> {
        if let Some(checkpointer) = self.inner.checkpointer.lock().expect("checkpointer").take() {
            checkpointer.stop();
        }
        let handles = std::mem::take(&mut *self.inner.writers.lock().expect("writer list"));
        if !handles.is_empty() {
            for q in &self.inner.queues {
                // Fails only when the writer is gone already.
                let _ = q.blocking_send(Command::Shutdown);
            }
            for handle in handles {
                let _ = handle.join();
            }
        }
        self.flush()?;
        // Every writer is done and every shard flushed: the next open replays nothing.
        let positions: Vec<u64> = self
            .inner
            .applied
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect();
        mark_checkpoint(&self.inner.shards, &positions);
        self.flush()?;
        for (done, position) in self.inner.checkpointed.iter().zip(&positions) {
            done.fetch_max(*position, Ordering::Release);
        }
        // The whole log is before the checkpoint now: every recalled body goes.
        for (index, position) in positions.iter().enumerate() {
            self.inner.segments[index].erase_recalled(&self.shard(index).log, *position)?;
        }
        self.flush()?;
        Ok(())
    }

    fn shard(&self, index: usize) -> &ShardDb {
        &self.inner.shards[index]
    }

    /// The stripe of `user`'s device records.
    fn device_lock(&self, user: u64) -> &tokio::sync::Mutex<()> {
        &self.inner.device_locks[stripe_of(user)]
    }

    fn lock_for(&self, key: u64) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned stripe only means a panic elsewhere; the data is in sled.
        self.inner.locks[stripe_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Submits an operation to shard `shard`'s writer and waits until it is durable.
    pub(crate) async fn run_ops<T: Send + 'static>(
        &self,
        shard: usize,
        request: OpsRequest,
    ) -> Result<(T, Vec<Appended>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.queues[shard]
            .send(Command::Ops(request, tx))
            .await
            .map_err(|_| StorageError::ShuttingDown)?;
        let done = rx.await.map_err(|_| StorageError::ShuttingDown)??;
        let outcome = done
            .outcome
            .downcast::<T>()
            .map_err(|_| StorageError::Corrupt("operation outcome"))?;
        Ok((*outcome, done.events))
    }

    /// [`Self::run_ops`] from a blocking thread (never an async worker).
    pub(crate) fn run_ops_blocking<T: Send + 'static>(
        &self,
        shard: usize,
        request: OpsRequest,
    ) -> Result<T> {
        let done = self
            .submit_ops_blocking(shard, request)?
            .blocking_recv()
            .map_err(|_| StorageError::ShuttingDown)??;
        done.outcome
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StorageError::Corrupt("operation outcome"))
    }

    /// Queues an operation on shard `shard`'s writer from a blocking thread; the
    /// receiver answers once it is durable.
    pub(crate) fn submit_ops_blocking(
        &self,
        shard: usize,
        request: OpsRequest,
    ) -> Result<oneshot::Receiver<Result<writer::OpsDone>>> {
        let (tx, rx) = oneshot::channel();
        self.inner.queues[shard]
            .blocking_send(Command::Ops(request, tx))
            .map_err(|_| StorageError::ShuttingDown)?;
        Ok(rx)
    }

    /// Takes the striped locks of `keys` (each stripe once, in stripe order, so that
    /// two callers cannot deadlock).
    fn lock_many(&self, keys: impl Iterator<Item = u64>) -> Vec<std::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(stripe_of).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| {
                self.inner.locks[s]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            })
            .collect()
    }
}

fn stripe_of(key: u64) -> usize {
    (courier_protocol::conversation::mix(key) % LOCK_STRIPES as u64) as usize
}

/// Records, per shard, the log position that every shard's indexes are flushed up
/// to: where the next open starts replaying. Written after that flush, never before
/// the effects it covers are on disk on every shard (which is why it is not part of
/// a commit's batch); the caller flushes it before any log segment below it goes.
fn mark_checkpoint(shards: &[ShardDb], positions: &[u64]) {
    for (shard, position) in shards.iter().zip(positions) {
        if let Err(e) = shard.log.insert(keys::APPLIED, &position.to_be_bytes()) {
            tracing::warn!(error = %e, "cannot record the checkpoint");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The highest activity count any shard has written.
fn activity_high_water(shards: &[ShardDb]) -> Result<u64> {
    let mut hwm = 0;
    for shard in shards {
        if let Some(v) = shard.log.get(keys::ACTIVITY_HWM)? {
            hwm = hwm.max(writer::decode_u64(&v).ok_or(StorageError::Corrupt("activity"))?);
        }
    }
    Ok(hwm)
}

fn check_meta(dir: &Path, shards: usize) -> Result<()> {
    let path = dir.join(META_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut found = None;
            let mut format = None;
            for line in text.lines() {
                match line.split_once('=') {
                    Some(("shards", v)) => found = v.trim().parse::<usize>().ok(),
                    Some(("format", v)) => format = v.trim().parse::<u32>().ok(),
                    _ => {}
                }
            }
            let (Some(found), Some(format)) = (found, format) else {
                return Err(StorageError::BadMeta(format!(
                    "cannot parse {}",
                    path.display()
                )));
            };
            if format != FORMAT_VERSION {
                return Err(StorageError::BadMeta(format!(
                    "format {format} is not supported (this build reads {FORMAT_VERSION})"
                )));
            }
            if found != shards {
                return Err(StorageError::ShardCountMismatch {
                    found,
                    configured: shards,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            std::fs::write(&tmp, format!("format={FORMAT_VERSION}\nshards={shards}\n"))?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
