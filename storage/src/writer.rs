//! The per-shard writer thread: the message queue between the API layer and the store.
//!
//! Each shard owns the conversations that hash to it, and only its writer assigns
//! their seqs, so seqs are gap-free and strictly increasing without locks. The writer
//! takes whatever queued up while it was busy (up to `max_batch`), appends the whole
//! batch to the shard's commit log with one `fdatasync`, applies it to the indexes
//! (sled, not flushed: the log is what makes it durable) and only then answers each
//! waiter (group commit). The committed batch goes to the shard's fan-out stage
//! through a bounded hand-off: the writer never walks member lists or touches
//! sockets, and starts its next fsync while the last batch is delivered. The fan-out
//! thread hands the batch to the commit listener in seq order (which is how the
//! gateway routes deliveries), then answers its waiters: once an append is
//! acknowledged, its deliveries are queued. At open, the log records past what the
//! indexes hold are applied again ([`replay`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courier_protocol::ConversationId;
use tokio::sync::{mpsc, oneshot};

use crate::commitlog::{CommitLog, Recovered};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::recall::RecallRefusal;
use crate::record::{ConversationState, Recall, StoredMessage};
use crate::shard::{ShardDb, ShardMap};
use crate::{now_ms, AppendRequest, Appended, CommitListener};

pub(crate) enum Command {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    /// Commit what came before, then stop; later commands are dropped (their waiters
    /// see the store as shut down).
    Shutdown,
}

/// A committed batch on its way out: the messages to deliver, then the answers.
pub(crate) struct Committed {
    messages: Vec<StoredMessage>,
    replies: Vec<(oneshot::Sender<Result<Appended>>, Result<Appended>)>,
}

/// Batches a fan-out thread may hold before the writer waits (back pressure).
const FANOUT_QUEUE: usize = 64;

/// One shard's fan-out stage: a thread that delivers committed batches in order and
/// then answers their waiters.
pub(crate) struct FanOut {
    tx: Option<std::sync::mpsc::SyncSender<Committed>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FanOut {
    /// Starts the fan-out thread of shard `index`.
    pub fn start(index: usize, listener: Option<Arc<dyn CommitListener>>) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Committed>(FANOUT_QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("courier-fanout-{index}"))
            .spawn(move || {
                for batch in rx {
                    if let (Some(listener), false) = (&listener, batch.messages.is_empty()) {
                        listener.committed(&batch.messages);
                    }
                    for (reply, result) in batch.replies {
                        // The waiter may have given up (connection closed); the
                        // message is stored anyway.
                        let _ = reply.send(result);
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn hand_off(&self, batch: Committed) {
        if let Some(tx) = &self.tx {
            // Fails only if the fan-out thread died (a listener panicked): the
            // waiters then see the store as shut down.
            let _ = tx.send(batch);
        }
    }

    /// Lets the thread deliver what it holds, then waits for it.
    fn finish(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) struct Writer {
    pub index: usize,
    pub shards: Arc<[ShardDb]>,
    pub map: ShardMap,
    /// The fan-out stage of this shard.
    pub fanout: FanOut,
    pub max_batch: usize,
    pub seq_cache_entries: usize,
    pub seq_cache: HashMap<[u8; keys::CONV_LEN], u64>,
    pub stats: std::sync::Arc<crate::stats::CommitStats>,
    /// The store-wide activity counter: every stored message takes the next count.
    pub activity: Arc<AtomicU64>,
    /// This shard's commit log.
    pub log: CommitLog,
    /// Per shard: the log position the indexes hold every record up to (in memory).
    pub applied: Arc<[AtomicU64]>,
    /// Per shard: the log position every shard's indexes are flushed up to.
    pub checkpointed: Arc<[AtomicU64]>,
    /// The checkpoint this writer last cut its log back to.
    pub truncated: u64,
    /// The last group commit failed: the shard cannot write now.
    pub failing: bool,
}

enum Outcome {
    /// Stored by this batch; valid once the batch is durable.
    Fresh(Appended),
    /// Already durable before this batch (a resend).
    Stored(Appended),
    Failed(StorageError),
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut stop = false;
        while !stop {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(req, reply) => batch.push((req, reply)),
                    Command::Shutdown => {
                        stop = true;
                        break;
                    }
                }
                if batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut batch);
        }
        drop(rx);
        self.fanout.finish();
        // Everything applied is flushed: the log before here is needed no more.
        match self.shard().db.flush() {
            Ok(_) => {
                let end = self.log.end();
                if let Err(e) = self.log.truncate_below(end) {
                    tracing::warn!(shard = self.index, error = %e, "cannot delete old log segments");
                }
            }
            Err(e) => tracing::error!(shard = self.index, error = %e, "final flush failed"),
        }
    }

    /// Keeps the shard's writable state, with one log line per change of state: the
    /// first failed commit says why; the first success after failures says so.
    fn note_commit(&mut self, failed: Option<&StorageError>) {
        match (failed, self.failing) {
            (Some(e), false) => {
                self.failing = true;
                self.stats.unwritable_shards.fetch_add(1, Ordering::Relaxed);
                tracing::error!(shard = self.index, error = %e, "shard cannot write: appends fail until a commit succeeds again");
            }
            (None, true) => {
                self.failing = false;
                self.stats.unwritable_shards.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(shard = self.index, "shard writes again");
            }
            _ => {}
        }
    }

    /// Deletes log segments every shard's indexes hold durably by now.
    fn cut_log(&mut self) {
        let checkpoint = self.checkpointed[self.index].load(Ordering::Acquire);
        if checkpoint > self.truncated {
            match self.log.truncate_below(checkpoint) {
                Ok(()) => self.truncated = checkpoint,
                Err(e) => {
                    tracing::warn!(shard = self.index, error = %e, "cannot delete old log segments")
                }
            }
        }
    }

    fn shard(&self) -> &ShardDb {
        &self.shards[self.index]
    }

    fn commit(&mut self, batch: &mut Vec<(AppendRequest, oneshot::Sender<Result<Appended>>)>) {
        let now = now_ms();
        let mut log_batch = sled::Batch::default();
        let mut in_batch: HashMap<Vec<u8>, Appended> = HashMap::new();
        let mut last_seqs: HashMap<ConversationId, keys::Tail> = HashMap::new();
        let mut new_direct: Vec<ConversationId> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut committed = Vec::new();
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut recalled_here: Vec<(ConversationId, u64)> = Vec::new();

        for (req, reply) in batch.drain(..) {
            let idem_key = keys::idem(&req.conversation, req.sender, &req.client_msg_id);
            if let Some(a) = in_batch.get(&idem_key) {
                let dup = Appended {
                    duplicate: true,
                    ..*a
                };
                outcomes.push((reply, Outcome::Fresh(dup)));
                continue;
            }
            match self.shard().log.get(&idem_key) {
                Ok(Some(v)) => {
                    let outcome = match decode_idem(&v) {
                        Some((seq, server_time_ms)) => Outcome::Stored(Appended {
                            seq,
                            server_time_ms,
                            duplicate: true,
                        }),
                        None => Outcome::Failed(StorageError::Corrupt("idempotency entry")),
                    };
                    outcomes.push((reply, outcome));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    outcomes.push((reply, Outcome::Failed(e.into())));
                    continue;
                }
            }
            // A recall event erases its target in the same commit.
            let tombstone = match req.recalls {
                0 => None,
                target => match self.tombstone(&req, target, now, &recalled_here) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        outcomes.push((reply, Outcome::Failed(e)));
                        continue;
                    }
                },
            };
            let seq = match self.next_seq(&req.conversation) {
                Ok(seq) => seq,
                Err(e) => {
                    outcomes.push((reply, Outcome::Failed(e)));
                    continue;
                }
            };
            if let Some(tombstone) = &tombstone {
                recalled_here.push((tombstone.conversation, tombstone.seq));
                log_batch.insert(
                    &keys::msg(&tombstone.conversation, tombstone.seq),
                    tombstone.encode_value(),
                );
            }
            if seq == 1 && !req.conversation.is_group() {
                new_direct.push(req.conversation);
            }
            let activity = self.activity.fetch_add(1, Ordering::Relaxed) + 1;
            last_seqs.insert(req.conversation, keys::Tail { seq, activity });
            let message = StoredMessage {
                conversation: req.conversation,
                seq,
                sender: req.sender,
                sender_device: req.sender_device,
                client_msg_id: req.client_msg_id,
                server_time_ms: now,
                reply_to_seq: req.reply_to_seq,
                body: req.body,
                recalled: None,
            };
            let value = message.encode_value();
            records.push(encode_record(
                &message.conversation,
                seq,
                activity,
                req.recalls,
                &value,
            ));
            log_batch.insert(&keys::msg(&req.conversation, seq), value);
            log_batch.insert(idem_key.as_slice(), encode_idem(seq, now).as_slice());
            let appended = Appended {
                seq,
                server_time_ms: now,
                duplicate: false,
            };
            in_batch.insert(idem_key, appended);
            outcomes.push((reply, Outcome::Fresh(appended)));
            committed.push(message);
        }

        if !committed.is_empty() {
            for (c, tail) in &last_seqs {
                log_batch.insert(&keys::last_seq(c), &tail.encode());
            }
            // The batch records how far the counter got, so a restart goes on above it.
            if let Some(hwm) = last_seqs.values().map(|t| t.activity).max() {
                log_batch.insert(&keys::ACTIVITY_HWM, &hwm.to_be_bytes());
            }
            let started = std::time::Instant::now();
            // Durable once in the log; the indexes follow without a flush of their own.
            let durable = self
                .register_direct(&new_direct, now)
                .and_then(|()| self.log.append(records.iter().map(Vec::as_slice)))
                .and_then(|end| {
                    log_batch.insert(&keys::APPLIED, &end.to_be_bytes());
                    self.shard().log.apply_batch(log_batch)?;
                    self.applied[self.index].store(end, Ordering::Release);
                    Ok(())
                });
            self.stats
                .flush_us
                .observe(started.elapsed().as_micros() as u64);
            self.stats.batch_size.observe(committed.len() as u64);
            self.note_commit(durable.as_ref().err());
            if let Err(e) = durable {
                self.stats
                    .failed_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // What is on disk is now unknown: re-read seqs from the log.
                self.seq_cache.clear();
                committed.clear();
                for (_, outcome) in &mut outcomes {
                    if matches!(outcome, Outcome::Fresh(_)) {
                        *outcome =
                            Outcome::Failed(StorageError::Io(std::io::Error::other(e.to_string())));
                    }
                }
            }
        }

        if !committed.is_empty() {
            self.advance_senders_read_cursors(&committed);
        }
        self.stats
            .appended
            .fetch_add(committed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats.deduplicated.fetch_add(
            outcomes
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Stored(_)))
                .count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );

        let replies = outcomes
            .into_iter()
            .map(|(reply, outcome)| {
                let result = match outcome {
                    Outcome::Fresh(a) | Outcome::Stored(a) => Ok(a),
                    Outcome::Failed(e) => Err(e),
                };
                (reply, result)
            })
            .collect();
        self.fanout.hand_off(Committed {
            messages: committed,
            replies,
        });
        self.cut_log();
    }

    /// What a user sends it has read: its read cursor moves up to its own message, so
    /// unread counts only count other people's messages. Not flushed here: a lost
    /// cursor update after a crash only shows an old message as unread.
    fn advance_senders_read_cursors(&self, committed: &[StoredMessage]) {
        let mut newest: HashMap<(u64, ConversationId), u64> = HashMap::new();
        for m in committed {
            let seq = newest.entry((m.sender, m.conversation)).or_default();
            *seq = (*seq).max(m.seq);
        }
        for ((user, c), seq) in newest {
            advance_read_cursor(&self.shards, self.map, user, &c, seq);
        }
    }

    /// The erased form of message `target`, which recall event `req` recalls at `now`;
    /// refused when there is no such message (or it is past retention) or it is
    /// recalled already (before, or earlier in this batch).
    fn tombstone(
        &self,
        req: &AppendRequest,
        target: u64,
        now: u64,
        recalled_here: &[(ConversationId, u64)],
    ) -> Result<StoredMessage> {
        let c = req.conversation;
        if recalled_here.contains(&(c, target)) {
            return Err(StorageError::Recall(RecallRefusal::AlreadyRecalled));
        }
        let Some(value) = self.shard().log.get(keys::msg(&c, target))? else {
            return Err(StorageError::Recall(RecallRefusal::NoMessage));
        };
        let original = StoredMessage::decode_value(c, target, &value)?;
        if original.recalled.is_some() {
            return Err(StorageError::Recall(RecallRefusal::AlreadyRecalled));
        }
        Ok(erased(original, req.sender, now))
    }

    fn next_seq(&mut self, c: &ConversationId) -> Result<u64> {
        let key = keys::conv(c);
        let last = match self.seq_cache.get(&key) {
            Some(&seq) => seq,
            None => match self.shard().log.get(keys::last_seq(c))? {
                Some(v) => {
                    keys::Tail::decode(&v)
                        .ok_or(StorageError::Corrupt("last seq"))?
                        .seq
                }
                None => 0,
            },
        };
        if self.seq_cache.len() >= self.seq_cache_entries {
            self.seq_cache.clear();
        }
        self.seq_cache.insert(key, last + 1);
        Ok(last + 1)
    }

    fn register_direct(&self, convs: &[ConversationId], now: u64) -> Result<()> {
        register_direct(&self.shards, self.map, convs, now)
    }
}

/// Adds new 1:1 conversations to both participants' indexes, durably, before the
/// first message is written: a stored message is never missing from a user's list
/// (the users' shards are not covered by this shard's log).
fn register_direct(
    shards: &[ShardDb],
    map: ShardMap,
    convs: &[ConversationId],
    now: u64,
) -> Result<()> {
    let mut touched = Vec::new();
    for c in convs {
        let ConversationId::Direct { low, high } = *c else {
            continue;
        };
        for user in [low, high] {
            let shard = map.user(user);
            let state = ConversationState {
                created_ms: now,
                ..ConversationState::default()
            };
            // Keeps an existing entry (and its read cursor) untouched.
            let _ = shards[shard].userconv_state.compare_and_swap(
                keys::user_conv(user, c),
                None as Option<&[u8]>,
                Some(&state.encode()[..]),
            )?;
            if !touched.contains(&shard) {
                touched.push(shard);
            }
        }
    }
    for shard in touched {
        shards[shard].db.flush()?;
    }
    Ok(())
}

/// The kind byte of a message record in the commit log.
const RECORD_MESSAGE: u8 = 1;
/// The kind byte of a recall event's record: a message that erases another.
const RECORD_RECALL: u8 = 2;

/// A message as a commit-log record: kind, conversation, seq, activity count, (for a
/// recall event, the recalled seq), then the stored value.
fn encode_record(
    c: &ConversationId,
    seq: u64,
    activity: u64,
    recalls: u64,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + keys::CONV_LEN + 24 + value.len());
    out.push(if recalls == 0 {
        RECORD_MESSAGE
    } else {
        RECORD_RECALL
    });
    out.extend_from_slice(&keys::conv(c));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&activity.to_be_bytes());
    if recalls != 0 {
        out.extend_from_slice(&recalls.to_be_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// A decoded record: the message, its activity count, the seq it recalls (or 0).
fn decode_record(payload: &[u8]) -> Result<(StoredMessage, u64, u64)> {
    let corrupt = || StorageError::Corrupt("commit log record");
    let kind = *payload.first().ok_or_else(corrupt)?;
    let head = 1 + keys::CONV_LEN + 16;
    let head = match kind {
        RECORD_MESSAGE => head,
        RECORD_RECALL => head + 8,
        _ => return Err(corrupt()),
    };
    if payload.len() < head {
        return Err(corrupt());
    }
    let c = keys::parse_conv(&payload[1..1 + keys::CONV_LEN]).ok_or_else(corrupt)?;
    let at = 1 + keys::CONV_LEN;
    let seq = decode_u64(&payload[at..at + 8]).ok_or_else(corrupt)?;
    let activity = decode_u64(&payload[at + 8..at + 16]).ok_or_else(corrupt)?;
    let recalls = match kind {
        RECORD_RECALL => decode_u64(&payload[at + 16..at + 24]).ok_or_else(corrupt)?,
        _ => 0,
    };
    let message = StoredMessage::decode_value(c, seq, &payload[head..])?;
    Ok((message, activity, recalls))
}

/// `original` with its content erased, recalled by `by_user` at `at_ms`.
fn erased(original: StoredMessage, by_user: u64, at_ms: u64) -> StoredMessage {
    StoredMessage {
        body: bytes::Bytes::new(),
        recalled: Some(Recall { by_user, at_ms }),
        ..original
    }
}

/// Applies log records of shard `index` that its indexes may lack (the tail after
/// the last position they held when the process stopped). Applying a record twice
/// changes nothing: a message already there (perhaps recalled since) is kept as it
/// is, one below the retention floor is not brought back, the last seq and the
/// activity mark only move up.
pub(crate) fn replay(
    shards: &[ShardDb],
    map: ShardMap,
    index: usize,
    recovered: &[Recovered],
) -> Result<usize> {
    let shard = &shards[index];
    let mut applied = 0;
    for record in recovered {
        let (message, activity, recalls) = decode_record(&record.payload)?;
        let c = message.conversation;
        let seq = message.seq;
        if recalls != 0 {
            // The erasure the event stands for, exactly as the writer made it.
            let key = keys::msg(&c, recalls);
            if let Some(value) = shard.log.get(key)? {
                let target = StoredMessage::decode_value(c, recalls, &value)?;
                if target.recalled.is_none() {
                    let tombstone = erased(target, message.sender, message.server_time_ms);
                    shard.log.insert(key, tombstone.encode_value())?;
                }
            }
        }
        if seq == 1 && !c.is_group() {
            register_direct(shards, map, &[c], message.server_time_ms)?;
        }
        let floor = match shard.log.get(crate::retention::retained_key(&c))? {
            Some(v) => decode_u64(&v).ok_or(StorageError::Corrupt("retained seq"))?,
            None => 1,
        };
        if seq >= floor {
            let _ = shard.log.compare_and_swap(
                keys::msg(&c, seq),
                None as Option<&[u8]>,
                Some(message.encode_value()),
            )?;
        }
        let idem = keys::idem(&c, message.sender, &message.client_msg_id);
        shard
            .log
            .insert(idem, &encode_idem(seq, message.server_time_ms))?;
        shard.log.fetch_and_update(keys::last_seq(&c), |old| {
            let old = old.and_then(keys::Tail::decode).unwrap_or_default();
            let tail = keys::Tail {
                seq: old.seq.max(seq),
                activity: old.activity.max(activity),
            };
            Some(tail.encode().to_vec())
        })?;
        shard.log.fetch_and_update(keys::ACTIVITY_HWM, |old| {
            let old = old.and_then(decode_u64).unwrap_or(0);
            Some(old.max(activity).to_be_bytes().to_vec())
        })?;
        advance_read_cursor(shards, map, message.sender, &c, seq);
        shard.log.insert(keys::APPLIED, &record.end.to_be_bytes())?;
        applied += 1;
    }
    Ok(applied)
}

/// What a user sends it has read (see `Writer::advance_senders_read_cursors`).
fn advance_read_cursor(shards: &[ShardDb], map: ShardMap, user: u64, c: &ConversationId, seq: u64) {
    let tree = &shards[map.user(user)].userconv_state;
    let result = tree.update_and_fetch(keys::user_conv(user, c), |old| {
        let old = old?;
        match ConversationState::decode(old) {
            Ok(mut state) if state.read_seq < seq => {
                state.read_seq = seq;
                Some(state.encode().to_vec())
            }
            _ => Some(old.to_vec()),
        }
    });
    if let Err(e) = result {
        tracing::warn!(user, error = %e, "cannot advance the sender's read cursor");
    }
}

fn encode_idem(seq: u64, time: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&seq.to_be_bytes());
    out[8..].copy_from_slice(&time.to_be_bytes());
    out
}

fn decode_idem(v: &[u8]) -> Option<(u64, u64)> {
    if v.len() != 16 {
        return None;
    }
    Some((decode_u64(&v[..8])?, decode_u64(&v[8..])?))
}

pub(crate) fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
