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
//! acknowledged, its deliveries are queued. A small batch of direct messages, when
//! the fan-out thread has nothing pending, is routed by the writer itself (two
//! recipients a message; it saves a thread hand-off at light load). At open, the log
//! records past the last checkpoint are applied again ([`replay`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use courier_protocol::ConversationId;
use tokio::sync::{mpsc, oneshot};

use crate::commitlog::{CommitLog, Recovered, HEADER};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::ops::{decode_ops, encode_ops, Op};
use crate::recall::{EditRefusal, RecallRefusal};
use crate::record::{ConversationState, Recall, StoredMessage};
use crate::segments::{self, EditMark, IdemWindow, Segments};
use crate::shard::{ShardDb, ShardMap};
use crate::{now_ms, AppendRequest, Appended, CommitListener, EditOf, MembershipChange};

pub(crate) enum Command {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    Ops(OpsRequest, oneshot::Sender<Result<OpsDone>>),
    /// Commit what came before, then stop; later commands are dropped (their waiters
    /// see the store as shut down).
    Shutdown,
}

/// An operation that the writer plans against the indexes, then logs (one record,
/// with the messages it stores) and applies in the same group commit as the
/// messages around it.
pub(crate) struct OpsRequest {
    /// The conversation the plan's events are stored in (one this shard owns).
    pub conversation: Option<ConversationId>,
    /// The plan reads state that commands before it may change (group membership):
    /// what came before is committed first, and it is committed on its own, so that
    /// it sees every earlier command applied and every later one sees it applied.
    pub alone: bool,
    /// Decides the ops (or refuses with an error); runs on the writer thread.
    pub plan: PlanFn,
}

/// Decides an operation's ops on the writer thread (or refuses with an error).
pub(crate) type PlanFn = Box<dyn FnOnce(&PlanContext<'_>) -> Result<Planned> + Send>;

impl OpsRequest {
    /// Ops the caller decided (under its own lock), logged and applied as they are,
    /// batched with the shard's messages.
    pub fn decided(ops: Vec<Op>) -> Self {
        Self {
            conversation: None,
            alone: false,
            plan: Box::new(move |_| {
                Ok(Planned {
                    ops,
                    events: Vec::new(),
                    membership: None,
                    outcome: Box::new(()),
                })
            }),
        }
    }
}

/// What a plan may look at.
pub(crate) struct PlanContext<'a> {
    pub shards: &'a [ShardDb],
    pub map: ShardMap,
    /// The seq the plan's first event would get in its conversation.
    pub next_seq: u64,
    pub now: u64,
}

/// A message an operation stores (a group's system event).
pub(crate) struct Event {
    pub sender: u64,
    pub client_msg_id: String,
    pub body: Bytes,
}

/// A plan's result: what to write, and what to answer once it is durable.
pub(crate) struct Planned {
    pub ops: Vec<Op>,
    pub events: Vec<Event>,
    pub membership: Option<MembershipChange>,
    pub outcome: Box<dyn Any + Send>,
}

/// The answer to an [`OpsRequest`] once durable.
pub(crate) struct OpsDone {
    pub outcome: Box<dyn Any + Send>,
    /// The stored events, in order.
    pub events: Vec<Appended>,
}

enum Reply {
    Append(oneshot::Sender<Result<Appended>>, Result<Appended>),
    Ops(oneshot::Sender<Result<OpsDone>>, Result<OpsDone>),
}

impl Reply {
    fn send(self) {
        // The waiter may have given up (connection closed); what it asked for is
        // stored anyway.
        match self {
            Reply::Append(tx, result) => drop(tx.send(result)),
            Reply::Ops(tx, result) => drop(tx.send(result)),
        }
    }
}

/// A committed batch on its way out: the messages to deliver (with the membership
/// change that a batch committed alone made), then the answers.
pub(crate) struct Committed {
    messages: Vec<StoredMessage>,
    membership: Option<MembershipChange>,
    replies: Vec<Reply>,
}

/// Batches a fan-out thread may hold before the writer waits (back pressure).
const FANOUT_QUEUE: usize = 64;

/// Most messages of a batch the writer routes itself (see [`FanOut::hand_off`]).
const INLINE_MESSAGES: usize = 16;

/// Hands a committed batch to the listener, then answers its waiters: once an
/// append is acknowledged, its deliveries are queued.
fn deliver(listener: Option<&dyn CommitListener>, batch: Committed) {
    if let Some(listener) = listener {
        if !batch.messages.is_empty() || batch.membership.is_some() {
            listener.committed(&batch.messages, batch.membership.as_ref());
        }
    }
    for reply in batch.replies {
        reply.send();
    }
}

/// One shard's fan-out stage: a thread that delivers committed batches in order and
/// then answers their waiters.
pub(crate) struct FanOut {
    tx: Option<std::sync::mpsc::SyncSender<Committed>>,
    thread: Option<std::thread::JoinHandle<()>>,
    listener: Option<Arc<dyn CommitListener>>,
    /// Batches handed to the thread and not yet finished by it.
    pending: Arc<AtomicU64>,
}

impl FanOut {
    /// Starts the fan-out thread of shard `index`.
    pub fn start(index: usize, listener: Option<Arc<dyn CommitListener>>) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Committed>(FANOUT_QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let thread = {
            let (listener, pending) = (listener.clone(), pending.clone());
            std::thread::Builder::new()
                .name(format!("courier-fanout-{index}"))
                .spawn(move || {
                    for batch in rx {
                        deliver(listener.as_deref(), batch);
                        pending.fetch_sub(1, Ordering::Release);
                    }
                })?
        };
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            listener,
            pending,
        })
    }

    /// Delivers `batch` and answers its waiters: on the writer's own thread when the
    /// fan-out thread is idle and the batch is cheap to route (direct conversations
    /// only: two recipients per message, no member list, no membership change),
    /// which saves a thread hand-off per commit at light load; through the thread
    /// otherwise, which keeps order: nothing goes inline while a batch waits there.
    fn hand_off(&self, batch: Committed) {
        let cheap = batch.membership.is_none()
            && batch.messages.len() <= INLINE_MESSAGES
            && batch.messages.iter().all(|m| !m.conversation.is_group());
        if cheap && self.pending.load(Ordering::Acquire) == 0 {
            deliver(self.listener.as_deref(), batch);
            return;
        }
        if let Some(tx) = &self.tx {
            self.pending.fetch_add(1, Ordering::AcqRel);
            // Fails only if the fan-out thread died (a listener panicked): the
            // waiters then see the store as shut down.
            if tx.send(batch).is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
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
    /// Every shard's message store (this writer adds to its own).
    pub segments: Arc<[Segments]>,
    /// The shard's recent sends, to recognise resends.
    pub idem: IdemWindow,
    /// (conversation, user) pairs known to have a has-sent mark.
    pub sent_marks: std::collections::HashSet<(ConversationId, u64)>,
    /// Per shard: the log position the indexes hold every record up to (in memory).
    pub applied: Arc<[AtomicU64]>,
    /// The last group commit failed: the shard cannot write now.
    pub failing: bool,
    /// Group membership by (group, user) as of the last commit, for the send check.
    /// Whether a user may write to a group: `None` not a member, else until when
    /// it is muted (0: it is not).
    pub member_cache: HashMap<(u64, u64), Option<u64>>,
}

enum Outcome {
    /// Stored by this batch; valid once the batch is durable.
    Fresh(Appended),
    /// Already durable before this batch (a resend).
    Stored(Appended),
    Failed(StorageError),
}

/// A command taken into a batch.
pub(crate) enum Item {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    Ops(OpsRequest, oneshot::Sender<Result<OpsDone>>),
}

/// An answer held until the batch is durable (or failed).
enum PendingReply {
    Append(oneshot::Sender<Result<Appended>>, Outcome),
    Ops(oneshot::Sender<Result<OpsDone>>, Result<OpsDone>),
}

impl PendingReply {
    /// The batch failed: what it was to store is not stored.
    fn fail_fresh(&mut self, e: &StorageError) {
        let failed = || StorageError::Io(std::io::Error::other(e.to_string()));
        match self {
            PendingReply::Append(_, outcome @ Outcome::Fresh(_)) => {
                *outcome = Outcome::Failed(failed())
            }
            PendingReply::Ops(_, result @ Ok(_)) => *result = Err(failed()),
            _ => {}
        }
    }

    fn finish(self) -> Reply {
        match self {
            PendingReply::Append(tx, outcome) => Reply::Append(
                tx,
                match outcome {
                    Outcome::Fresh(a) | Outcome::Stored(a) => Ok(a),
                    Outcome::Failed(e) => Err(e),
                },
            ),
            PendingReply::Ops(tx, result) => Reply::Ops(tx, result),
        }
    }
}

/// What one group commit collects before it writes.
#[derive(Default)]
struct BatchBuilder {
    /// Index entries of the shard's `log` tree, in order. Not a `sled::Batch`: the
    /// commit log already makes the batch atomic (replay applies it again), and
    /// sled's atomic batches write out its I/O buffer twice each and take a lock
    /// that stops every other reader and writer.
    log_writes: Vec<(sled::IVec, sled::IVec)>,
    /// Messages stored by this batch, by idempotency key (resends within it).
    in_batch: HashMap<Vec<u8>, Appended>,
    /// Where each new message goes: its record (index into `records`), which
    /// message of the record, its conversation and seq, its idempotency hash.
    placed: Vec<(usize, u16, ConversationId, u64, u64)>,
    last_seqs: HashMap<ConversationId, keys::Tail>,
    new_direct: Vec<ConversationId>,
    /// Commit-log records, in order.
    records: Vec<Vec<u8>>,
    recalled_here: Vec<(ConversationId, u64)>,
    /// Messages edited by this batch: the latest mark, the batch's edit events.
    edits_here: HashMap<(ConversationId, u64), (Option<EditMark>, Vec<u64>)>,
    /// The new messages, in order.
    committed: Vec<StoredMessage>,
    /// Ops to apply after the log write, in order.
    ops: Vec<Op>,
    membership_changed: bool,
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
                    Command::Append(req, reply) => batch.push(Item::Append(req, reply)),
                    Command::Ops(req, reply) if req.alone => {
                        if !batch.is_empty() {
                            self.commit(&mut batch);
                        }
                        batch.push(Item::Ops(req, reply));
                        self.commit(&mut batch);
                    }
                    Command::Ops(req, reply) => batch.push(Item::Ops(req, reply)),
                    Command::Shutdown => {
                        stop = true;
                        break;
                    }
                }
                if batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
        }
        drop(rx);
        self.fanout.finish();
        // The store flushes every shard once all writers are done (a record's
        // effects may reach any shard) and only then moves the checkpoint.
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

    fn shard(&self) -> &ShardDb {
        &self.shards[self.index]
    }

    fn commit(&mut self, batch: &mut Vec<Item>) {
        if self.stats.indexes_failed.load(Ordering::Acquire) {
            return self.refuse(batch);
        }
        let now = now_ms();
        let mut b = BatchBuilder::default();
        let mut replies: Vec<PendingReply> = Vec::with_capacity(batch.len());
        let mut membership = None;

        for item in batch.drain(..) {
            match item {
                Item::Append(req, reply) => {
                    let outcome = self.stage_append(req, now, &mut b);
                    replies.push(PendingReply::Append(reply, outcome));
                }
                Item::Ops(req, reply) => {
                    let outcome = self.stage_ops(req, now, &mut b);
                    if let Ok((_, Some(change))) = &outcome {
                        membership = Some(change.clone());
                    }
                    replies.push(PendingReply::Ops(reply, outcome.map(|(done, _)| done)));
                }
            }
        }

        let mut committed = b.committed;
        let staged = !committed.is_empty() || !b.ops.is_empty();
        if staged {
            let mut log_writes = b.log_writes;
            for (c, tail) in &b.last_seqs {
                log_writes.push((
                    keys::last_seq(c).as_ref().into(),
                    tail.encode().as_ref().into(),
                ));
            }
            // The batch records how far the counter got, so a restart goes on above it.
            if let Some(hwm) = b.last_seqs.values().map(|t| t.activity).max() {
                log_writes.push((
                    keys::ACTIVITY_HWM.as_ref().into(),
                    hwm.to_be_bytes().as_ref().into(),
                ));
            }
            let started = std::time::Instant::now();
            // Durable once in the log; the indexes follow without a flush of their own.
            // A failed index write leaves sled refusing every later one: the store
            // takes no more writes (not even to the log, whose records would follow
            // one the indexes lack) until it reopens and replays the log.
            let mut indexes_failed = false;
            let durable = self
                .register_direct(&b.new_direct, now)
                .inspect_err(|_| indexes_failed = true)
                .and_then(|()| self.log.append(b.records.iter().map(Vec::as_slice)))
                .and_then(|written| {
                    self.place(&b.records, &b.placed, &written);
                    let end = written.end;
                    let tree = &self.shard().log;
                    let applied = log_writes
                        .into_iter()
                        .try_for_each(|(key, value)| tree.insert(key, value).map(drop))
                        .map_err(StorageError::from)
                        .and_then(|()| {
                            b.ops
                                .iter()
                                .try_for_each(|op| op.apply(&self.shards, self.map))
                        });
                    indexes_failed = applied.is_err();
                    applied.map(|()| end)
                });
            if let (true, Err(e)) = (indexes_failed, &durable) {
                self.stats.note_indexes_failed(e);
            }
            self.stats
                .flush_us
                .observe(started.elapsed().as_micros() as u64);
            self.stats.batch_size.observe(committed.len() as u64);
            self.note_commit(durable.as_ref().err());
            if b.membership_changed || durable.is_err() {
                self.member_cache.clear();
            }
            let durable = durable.map(|end| {
                self.advance_senders_read_cursors(&committed);
                // Every effect of the batch is in the indexes (in memory): the
                // checkpointer may count it once it has flushed them all.
                self.applied[self.index].store(end, Ordering::Release);
            });
            if let Err(e) = durable {
                self.stats
                    .failed_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // What is on disk is now unknown: re-read seqs from the log.
                self.seq_cache.clear();
                self.sent_marks.clear();
                committed.clear();
                membership = None;
                for reply in &mut replies {
                    reply.fail_fresh(&e);
                }
            }
        }

        self.stats
            .appended
            .fetch_add(committed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.stats.deduplicated.fetch_add(
            replies
                .iter()
                .filter(|r| matches!(r, PendingReply::Append(_, Outcome::Stored(_))))
                .count() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );

        let replies = replies.into_iter().map(PendingReply::finish).collect();
        self.fanout.hand_off(Committed {
            messages: committed,
            membership,
            replies,
        });
        if self.segments[self.index].has_unsealed() {
            self.segments[self.index].seal_pending(&self.shard().log);
        }
    }

    /// Answers a batch without writing anything: the indexes failed, and the store
    /// must reopen before it writes again.
    fn refuse(&mut self, batch: &mut Vec<Item>) {
        let refused = || {
            StorageError::Unavailable(
                "the indexes failed a write (disk full or failing); writes resume once the store has reopened",
            )
        };
        self.note_commit(Some(&refused()));
        let replies = batch
            .drain(..)
            .map(|item| match item {
                Item::Append(_, tx) => Reply::Append(tx, Err(refused())),
                Item::Ops(_, tx) => Reply::Ops(tx, Err(refused())),
            })
            .collect();
        self.fanout.hand_off(Committed {
            messages: Vec::new(),
            membership: None,
            replies,
        });
    }

    /// Checks one append and stages it in `b`.
    fn stage_append(&mut self, req: AppendRequest, now: u64, b: &mut BatchBuilder) -> Outcome {
        let idem_key = keys::idem(&req.conversation, req.sender, &req.client_msg_id);
        if let Some(a) = b.in_batch.get(&idem_key) {
            return Outcome::Fresh(Appended {
                duplicate: true,
                ..*a
            });
        }
        if let Some(stored) = self.stored_already(&req) {
            return Outcome::Stored(stored);
        }
        // Membership is decided here, in log order: nobody removed before this
        // message (or not yet added) writes to the group. Sender 0 is the server
        // itself (notices, erasures), which writes to any group.
        // So are mutes: from the mute's event on, a muted member's sends are refused.
        if let (ConversationId::Group(g), true) = (req.conversation, req.sender != 0) {
            match self.send_right(g, req.sender) {
                Ok(Some(until_ms)) if now < until_ms => {
                    return Outcome::Failed(StorageError::Muted { until_ms })
                }
                Ok(Some(_)) => {}
                Ok(None) => return Outcome::Failed(StorageError::NotParticipant),
                Err(e) => return Outcome::Failed(e),
            }
        }
        let link = Link::of(&req);
        // A recall event erases its target (and the target's edit events) in the
        // same commit; an edit event marks its target edited in the same commit.
        let staged = match link {
            Link::None => Ok(None),
            Link::Recalls(target) => self
                .tombstone(&req, target, now, &b.recalled_here)
                .and_then(|t| Ok(Some((self.edits_of(&req.conversation, t, b)?, None)))),
            Link::Edits(e) => self
                .edit_base(&req.conversation, e.target, b)
                .map(|(events, mark)| Some((events, mark))),
        };
        let staged = match staged {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        };
        let seq = match self.next_seq(&req.conversation) {
            Ok(seq) => seq,
            Err(e) => return Outcome::Failed(e),
        };
        let c = req.conversation;
        match (link, staged) {
            (Link::Recalls(target), Some((mut seqs, _))) => {
                b.recalled_here.push((c, target));
                let recall = Recall {
                    by_user: req.sender,
                    at_ms: now,
                };
                seqs.push(target);
                if let Err(e) =
                    recall_writes(&self.shard().log, &c, &seqs, recall, &mut b.log_writes)
                {
                    return Outcome::Failed(e);
                }
            }
            (Link::Edits(edit), Some((earlier, previous))) => {
                let event = StoredMessage {
                    conversation: c,
                    seq,
                    sender: req.sender,
                    sender_device: String::new(),
                    client_msg_id: String::new(),
                    server_time_ms: now,
                    reply_to_seq: edit.target,
                    body: Bytes::new(),
                    recalled: None,
                    mentions: req.mentions.clone(),
                    edited: None,
                };
                let mark = match edit_writes(
                    &self.shard().log,
                    &c,
                    edit,
                    previous,
                    &earlier,
                    &event,
                    &mut b.log_writes,
                ) {
                    Ok(mark) => mark,
                    Err(e) => return Outcome::Failed(e),
                };
                let entry = b.edits_here.entry((c, edit.target)).or_default();
                entry.0 = Some(mark);
                entry.1.push(seq);
            }
            _ => {}
        }
        if seq == 1 && !req.conversation.is_group() {
            b.new_direct.push(req.conversation);
        }
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
            mentions: req.mentions,
            edited: None,
        };
        let index_mentions = !matches!(link, Link::Edits(_));
        let (value, activity) = self.stage_message(&message, idem_key, index_mentions, b);
        b.placed.push((
            b.records.len(),
            0,
            message.conversation,
            seq,
            segments::idem_hash(
                &message.conversation,
                message.sender,
                &message.client_msg_id,
            ),
        ));
        b.records.push(encode_record(
            &message.conversation,
            seq,
            activity,
            link,
            &value,
        ));
        let appended = Appended {
            seq,
            server_time_ms: now,
            duplicate: false,
        };
        b.committed.push(message);
        Outcome::Fresh(appended)
    }

    /// Adds a new message's index entries to `b`; returns its stored value and its
    /// activity count.
    fn stage_message(
        &mut self,
        message: &StoredMessage,
        idem_key: Vec<u8>,
        index_mentions: bool,
        b: &mut BatchBuilder,
    ) -> (Vec<u8>, u64) {
        let activity = self.activity.fetch_add(1, Ordering::Relaxed) + 1;
        b.last_seqs.insert(
            message.conversation,
            keys::Tail {
                seq: message.seq,
                activity,
            },
        );
        let value = message.encode_value();
        if let Some(mention) = segments::mention_entry(message).filter(|_| index_mentions) {
            b.log_writes
                .push((mention.0.as_ref().into(), mention.1.into()));
        }
        let pair = (message.conversation, message.sender);
        if !self.sent_marks.contains(&pair) {
            // Written with every batch until it is known to be on the shard; a
            // failed batch forgets what it learnt.
            let key = segments::has_sent_key(&message.conversation, message.sender);
            if !matches!(self.shard().log.contains_key(key), Ok(true)) {
                b.log_writes
                    .push((key.as_ref().into(), sled::IVec::default()));
            }
            if self.sent_marks.len() >= self.seq_cache_entries {
                self.sent_marks.clear();
            }
            self.sent_marks.insert(pair);
        }
        b.in_batch.insert(
            idem_key,
            Appended {
                seq: message.seq,
                server_time_ms: message.server_time_ms,
                duplicate: false,
            },
        );
        (value, activity)
    }

    /// Plans one operation and stages its record, events and ops in `b`.
    fn stage_ops(
        &mut self,
        req: OpsRequest,
        now: u64,
        b: &mut BatchBuilder,
    ) -> Result<(OpsDone, Option<MembershipChange>)> {
        let next_seq = match &req.conversation {
            Some(c) => self.peek_seq(c)?,
            None => 0,
        };
        let planned = (req.plan)(&PlanContext {
            shards: &self.shards,
            map: self.map,
            next_seq,
            now,
        })?;
        let mut messages = Vec::with_capacity(planned.events.len());
        let mut appended = Vec::with_capacity(planned.events.len());
        if !planned.events.is_empty() {
            let c = req
                .conversation
                .ok_or(StorageError::InvalidArgument("events need a conversation"))?;
            for event in planned.events {
                let seq = self.next_seq(&c)?;
                let message = StoredMessage {
                    conversation: c,
                    seq,
                    sender: event.sender,
                    sender_device: String::new(),
                    client_msg_id: event.client_msg_id,
                    server_time_ms: now,
                    reply_to_seq: 0,
                    body: event.body,
                    recalled: None,
                    mentions: Vec::new(),
                    edited: None,
                };
                let idem_key = keys::idem(&c, message.sender, &message.client_msg_id);
                let (value, activity) = self.stage_message(&message, idem_key, true, b);
                b.placed.push((
                    b.records.len(),
                    messages.len() as u16 + 1,
                    c,
                    seq,
                    segments::idem_hash(&c, message.sender, &message.client_msg_id),
                ));
                messages.push((seq, activity, value));
                appended.push(Appended {
                    seq,
                    server_time_ms: now,
                    duplicate: false,
                });
                b.committed.push(message);
            }
        }
        if planned.ops.is_empty() && messages.is_empty() {
            return Ok((
                OpsDone {
                    outcome: planned.outcome,
                    events: appended,
                },
                None,
            ));
        }
        b.records.push(encode_ops_record(
            req.conversation.as_ref(),
            &messages,
            &planned.ops,
        ));
        b.membership_changed |= planned.membership.is_some();
        b.ops.extend(planned.ops);
        Ok((
            OpsDone {
                outcome: planned.outcome,
                events: appended,
            },
            planned.membership,
        ))
    }

    /// Whether `user` is a member of group `group` as of the last commit.
    /// Whether `user` may write to `group`: `None` when it is not a member, else
    /// until when it may not (its own mute, or the group's for plain members).
    fn send_right(&mut self, group: u64, user: u64) -> Result<Option<u64>> {
        if let Some(&known) = self.member_cache.get(&(group, user)) {
            return Ok(known);
        }
        let shard = self.shard();
        let right = match shard
            .groupmember_member
            .get(crate::groups::member_key(group, user))?
        {
            None => None,
            Some(v) => {
                let member = crate::Member::decode(user, &v)?;
                let info = shard
                    .groupid_group
                    .get(group.to_be_bytes())?
                    .map(|v| crate::GroupInfo::decode(group, &v))
                    .transpose()?;
                match info {
                    // A dismissed group has no senders left.
                    Some(g) if g.dismissed => None,
                    Some(g) if g.muted && member.role < crate::Role::Admin => Some(u64::MAX),
                    _ => Some(member.muted_until_ms),
                }
            }
        };
        if self.member_cache.len() >= self.seq_cache_entries {
            self.member_cache.clear();
        }
        self.member_cache.insert((group, user), right);
        Ok(right)
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

    /// Checks that message `target` of recall event `req`'s conversation may be
    /// recalled: it exists (and is not past retention) and is not recalled already
    /// (before, or earlier in this batch). Returns the target.
    fn tombstone(
        &self,
        req: &AppendRequest,
        target: u64,
        _now: u64,
        recalled_here: &[(ConversationId, u64)],
    ) -> Result<u64> {
        let c = req.conversation;
        if recalled_here.contains(&(c, target)) {
            return Err(StorageError::Recall(RecallRefusal::AlreadyRecalled));
        }
        let last = self.peek_seq(&c)? - 1;
        let floor = crate::retention::first_retained(&self.shard().log, &c)?;
        if target == 0 || target > last || target < floor {
            return Err(StorageError::Recall(RecallRefusal::NoMessage));
        }
        if self
            .shard()
            .log
            .contains_key(segments::recalled_key(&c, target))?
        {
            return Err(StorageError::Recall(RecallRefusal::AlreadyRecalled));
        }
        Ok(target)
    }

    /// The edit events of message `target` of `c`, stored and in this batch.
    fn edits_of(&self, c: &ConversationId, target: u64, b: &BatchBuilder) -> Result<Vec<u64>> {
        let mut events = segments::edit_events(&self.shard().log, c, target)?;
        if let Some((_, here)) = b.edits_here.get(&(*c, target)) {
            events.extend_from_slice(here);
        }
        Ok(events)
    }

    /// Checks that message `target` of `c` may be edited; returns its edit events
    /// so far and its latest edit mark.
    fn edit_base(
        &self,
        c: &ConversationId,
        target: u64,
        b: &BatchBuilder,
    ) -> Result<(Vec<u64>, Option<EditMark>)> {
        let last = self.peek_seq(c)? - 1;
        let floor = crate::retention::first_retained(&self.shard().log, c)?;
        if target == 0 || target > last || target < floor {
            return Err(StorageError::Edit(EditRefusal::NoMessage));
        }
        if b.recalled_here.contains(&(*c, target))
            || self
                .shard()
                .log
                .contains_key(segments::recalled_key(c, target))?
        {
            return Err(StorageError::Edit(EditRefusal::Recalled));
        }
        let mark = match b.edits_here.get(&(*c, target)) {
            Some((Some(mark), _)) => Some(*mark),
            _ => EditMark::read(&self.shard().log, c, target)?,
        };
        Ok((self.edits_of(c, target, b)?, mark))
    }

    /// The stored append `req` repeats, if the idempotency window holds it (each
    /// candidate the hash names is checked against its record).
    fn stored_already(&self, req: &AppendRequest) -> Option<Appended> {
        let hash = segments::idem_hash(&req.conversation, req.sender, &req.client_msg_id);
        let segments = &self.segments[self.index];
        self.idem
            .candidates(hash)
            .into_iter()
            .find_map(|(segment, loc)| {
                // A record retention deleted since, or cannot read: not a match.
                let (m, _) = segments.read_at(segment, loc).ok()?;
                (m.conversation == req.conversation
                    && m.sender == req.sender
                    && m.client_msg_id == req.client_msg_id)
                    .then_some(Appended {
                        seq: m.seq,
                        server_time_ms: m.server_time_ms,
                        duplicate: true,
                    })
            })
    }

    /// Records where a durable batch's messages lie, before the indexes say they
    /// exist; closes the segment in the message store when the log closed it.
    fn place(
        &mut self,
        records: &[Vec<u8>],
        placed: &[(usize, u16, ConversationId, u64, u64)],
        written: &crate::commitlog::Written,
    ) {
        let mut offsets = Vec::with_capacity(records.len());
        let mut at = written.first - written.segment;
        for r in records {
            offsets.push(at);
            at += (HEADER + r.len()) as u64;
        }
        let locs: Vec<_> = placed
            .iter()
            .map(|&(record, sub, c, seq, hash)| {
                (
                    keys::conv(&c),
                    seq,
                    segments::loc(offsets[record], sub),
                    hash,
                )
            })
            .collect();
        let segments = &self.segments[self.index];
        segments.add(
            written.segment,
            locs.iter().map(|&(conv, seq, loc, _)| (conv, seq, loc)),
        );
        for &(_, _, loc, hash) in &locs {
            self.idem.insert(hash, loc);
        }
        if let Some((_, end)) = written.closed {
            let table = self.idem.close(end);
            segments.close(&self.shards[self.index].log, end, table);
        }
    }

    /// The seq the next message of `c` gets (without taking it).
    fn peek_seq(&self, c: &ConversationId) -> Result<u64> {
        if let Some(&seq) = self.seq_cache.get(&keys::conv(c)) {
            return Ok(seq + 1);
        }
        Ok(match self.shard().log.get(keys::last_seq(c))? {
            Some(v) => {
                keys::Tail::decode(&v)
                    .ok_or(StorageError::Corrupt("last seq"))?
                    .seq
                    + 1
            }
            None => 1,
        })
    }

    /// Takes the next seq of `c`.
    fn next_seq(&mut self, c: &ConversationId) -> Result<u64> {
        let seq = self.peek_seq(c)?;
        if self.seq_cache.len() >= self.seq_cache_entries {
            self.seq_cache.clear();
        }
        self.seq_cache.insert(keys::conv(c), seq);
        Ok(seq)
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

/// The index writes that mark messages `seqs` of `c` recalled by `recall` and queue
/// their erasure on disk (those marked already are left as they are).
fn recall_writes(
    log: &sled::Tree,
    c: &ConversationId,
    seqs: &[u64],
    recall: Recall,
    out: &mut Vec<(sled::IVec, sled::IVec)>,
) -> Result<()> {
    for &seq in seqs {
        let mark = segments::recalled_key(c, seq);
        if log.contains_key(mark)? {
            continue;
        }
        out.push((
            mark.as_ref().into(),
            segments::encode_recall(&recall).as_ref().into(),
        ));
        out.push((
            segments::erase_key(c, seq).as_ref().into(),
            sled::IVec::default(),
        ));
    }
    Ok(())
}

/// The index writes of edit event `event` (its sender, time and seq) of message
/// `edit.target`, whose latest mark was `previous` and earlier edit events
/// `earlier`: the new mark, the event's place in the target's list and, when the
/// versions are not kept, the erasure of the earlier ones. Returns the new mark.
fn edit_writes(
    log: &sled::Tree,
    c: &ConversationId,
    edit: EditOf,
    previous: Option<EditMark>,
    earlier: &[u64],
    event: &StoredMessage,
    out: &mut Vec<(sled::IVec, sled::IVec)>,
) -> Result<EditMark> {
    let mark = EditMark {
        by_user: event.sender,
        at_ms: event.server_time_ms,
        count: previous.map_or(0, |m| m.count).saturating_add(1),
        event_seq: event.seq,
    };
    out.push((
        segments::edited_key(c, edit.target).as_ref().into(),
        mark.encode().as_ref().into(),
    ));
    out.push((
        segments::edit_event_key(c, edit.target, event.seq).into(),
        sled::IVec::default(),
    ));
    // The event itself is no news: it counts in nobody's unread number.
    out.push((
        segments::quiet_key(c, event.seq).as_ref().into(),
        sled::IVec::default(),
    ));
    // The target mentions whom its latest text mentions.
    let (key, mentions) = segments::edited_mentions(event, edit.target);
    out.push((key.as_ref().into(), mentions.into()));
    if !edit.keep_versions {
        let superseded = Recall {
            by_user: event.sender,
            at_ms: event.server_time_ms,
        };
        recall_writes(log, c, earlier, superseded, out)?;
        // The original's body goes too; the mark says it was edited, so a read
        // neither shows nor misses it.
        out.push((
            segments::erase_key(c, edit.target).as_ref().into(),
            sled::IVec::default(),
        ));
    }
    Ok(mark)
}

/// The kind byte of a message record in the commit log.
const RECORD_MESSAGE: u8 = 1;
/// The kind byte of a recall event's record: a message that erases another.
const RECORD_RECALL: u8 = 2;
/// The kind byte of an edit event's record: a message that marks another edited.
const RECORD_EDIT: u8 = 4;

/// What a message record says about another message of its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    None,
    /// A recall event: the seq it recalls.
    Recalls(u64),
    /// An edit event.
    Edits(EditOf),
}

impl Link {
    fn of(req: &AppendRequest) -> Self {
        match (req.recalls, req.edits) {
            (0, None) => Link::None,
            (0, Some(e)) => Link::Edits(e),
            (target, _) => Link::Recalls(target),
        }
    }

    fn head_len(kind: u8) -> Option<usize> {
        let head = 1 + keys::CONV_LEN + 16;
        match kind {
            RECORD_MESSAGE => Some(head),
            RECORD_RECALL => Some(head + 8),
            RECORD_EDIT => Some(head + 9),
            _ => None,
        }
    }
}

/// A message as a commit-log record: kind, conversation, seq, activity count, (for a
/// recall event, the recalled seq; for an edit event, the edited seq and whether
/// earlier versions are kept), then the stored value.
fn encode_record(c: &ConversationId, seq: u64, activity: u64, link: Link, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + keys::CONV_LEN + 25 + value.len());
    out.push(match link {
        Link::None => RECORD_MESSAGE,
        Link::Recalls(_) => RECORD_RECALL,
        Link::Edits(_) => RECORD_EDIT,
    });
    out.extend_from_slice(&keys::conv(c));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&activity.to_be_bytes());
    match link {
        Link::None => {}
        Link::Recalls(target) => out.extend_from_slice(&target.to_be_bytes()),
        Link::Edits(e) => {
            out.extend_from_slice(&e.target.to_be_bytes());
            out.push(u8::from(e.keep_versions));
        }
    }
    out.extend_from_slice(value);
    out
}

/// A decoded record: the message, its activity count, what it says of another.
fn decode_record(payload: &[u8]) -> Result<(StoredMessage, u64, Link)> {
    let corrupt = || StorageError::Corrupt("commit log record");
    let kind = *payload.first().ok_or_else(corrupt)?;
    let head = Link::head_len(kind).ok_or_else(corrupt)?;
    if payload.len() < head {
        return Err(corrupt());
    }
    let c = keys::parse_conv(&payload[1..1 + keys::CONV_LEN]).ok_or_else(corrupt)?;
    let at = 1 + keys::CONV_LEN;
    let seq = decode_u64(&payload[at..at + 8]).ok_or_else(corrupt)?;
    let activity = decode_u64(&payload[at + 8..at + 16]).ok_or_else(corrupt)?;
    let link = match kind {
        RECORD_RECALL => Link::Recalls(decode_u64(&payload[at + 16..at + 24]).ok_or_else(corrupt)?),
        RECORD_EDIT => Link::Edits(EditOf {
            target: decode_u64(&payload[at + 16..at + 24]).ok_or_else(corrupt)?,
            keep_versions: match payload[at + 24] {
                0 => false,
                1 => true,
                _ => return Err(corrupt()),
            },
        }),
        _ => Link::None,
    };
    let message = StoredMessage::decode_value(c, seq, &payload[head..])?;
    Ok((message, activity, link))
}

/// The messages a commit-log record stores, each with its place in the record (0
/// for a message record, `k` for the `k`-th message of an operation's record).
pub(crate) fn messages_in(payload: &[u8]) -> Result<Vec<(u16, StoredMessage)>> {
    Ok(match decode_any_record(payload)? {
        Record::Message(m, _, _) => vec![(0, *m)],
        Record::Ops(messages, _) => messages
            .into_iter()
            .enumerate()
            .map(|(i, (m, _))| (i as u16 + 1, m))
            .collect(),
    })
}

/// Message `sub` of a commit-log record (see [`messages_in`]).
pub(crate) fn message_in(payload: &[u8], sub: u16) -> Result<StoredMessage> {
    if sub == 0 {
        return Ok(decode_record(payload)?.0);
    }
    messages_in(payload)?
        .into_iter()
        .find(|(k, _)| *k == sub)
        .map(|(_, m)| m)
        .ok_or(StorageError::Corrupt("no such message in the record"))
}

/// Where the body of a message record's payload begins (it runs to the end).
pub(crate) fn body_start(payload: &[u8]) -> Result<usize> {
    let head = payload
        .first()
        .and_then(|&kind| Link::head_len(kind))
        .ok_or(StorageError::Corrupt("not a message record"))?;
    let value = payload
        .get(head..)
        .ok_or(StorageError::Corrupt("commit log record"))?;
    Ok(head + StoredMessage::body_offset(value)?)
}

/// The kind byte of an operation's record: ops, with the messages they store.
const RECORD_OPS: u8 = 3;

/// An operation as a commit-log record: kind, the conversation of its messages
/// (flag byte, then the id), the messages (count; each seq, activity count, length,
/// stored value), then the ops.
fn encode_ops_record(
    c: Option<&ConversationId>,
    messages: &[(u64, u64, Vec<u8>)],
    ops: &[Op],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + messages.iter().map(|m| m.2.len() + 20).sum::<usize>());
    out.push(RECORD_OPS);
    match c {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&keys::conv(c));
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(messages.len() as u16).to_be_bytes());
    for (seq, activity, value) in messages {
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&activity.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    encode_ops(ops, &mut out);
    out
}

/// A decoded commit-log record.
enum Record {
    /// A message, its activity count, what it says of another.
    Message(Box<StoredMessage>, u64, Link),
    /// An operation: its messages with their activity counts, then its ops.
    Ops(Vec<(StoredMessage, u64)>, Vec<Op>),
}

fn decode_any_record(payload: &[u8]) -> Result<Record> {
    if payload.first() != Some(&RECORD_OPS) {
        let (message, activity, link) = decode_record(payload)?;
        return Ok(Record::Message(Box::new(message), activity, link));
    }
    let corrupt = || StorageError::Corrupt("commit log ops record");
    let mut buf = &payload[1..];
    let take = |buf: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if buf.len() < n {
            return Err(corrupt());
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head.to_vec())
    };
    let c = match take(&mut buf, 1)?[0] {
        0 => None,
        1 => Some(keys::parse_conv(&take(&mut buf, keys::CONV_LEN)?).ok_or_else(corrupt)?),
        _ => return Err(corrupt()),
    };
    let count = u16::from_be_bytes(take(&mut buf, 2)?.try_into().expect("2 bytes"));
    let mut messages = Vec::with_capacity(usize::from(count).min(1024));
    for _ in 0..count {
        let c = c.ok_or_else(corrupt)?;
        let head = take(&mut buf, 20)?;
        let seq = decode_u64(&head[..8]).ok_or_else(corrupt)?;
        let activity = decode_u64(&head[8..16]).ok_or_else(corrupt)?;
        let len = u32::from_be_bytes(head[16..20].try_into().expect("4 bytes")) as usize;
        let value = take(&mut buf, len)?;
        messages.push((StoredMessage::decode_value(c, seq, &value)?, activity));
    }
    Ok(Record::Ops(messages, decode_ops(buf)?))
}

/// Applies log records of shard `index` that its indexes may lack (the tail after
/// the last checkpoint): the first pass, which every shard's log goes through before
/// any takes the second. Returns the cursor and flag changes it left for that second
/// pass (applied once every log's joins and leaves are in), in log order.
/// Applying a record twice changes nothing: a message already there (perhaps
/// recalled since) is kept as it is, one below the retention floor is not brought
/// back, the last seq and the activity mark only move up, ops write what they wrote.
pub(crate) fn replay(
    shards: &[ShardDb],
    map: ShardMap,
    index: usize,
    recovered: &[Recovered],
) -> Result<Vec<Op>> {
    let mut deferred = Vec::new();
    for record in recovered {
        match decode_any_record(&record.payload)? {
            Record::Message(message, activity, link) => {
                replay_message(shards, map, index, &message, activity, link)?
            }
            Record::Ops(messages, ops) => {
                // As the writer did: the ops, then the messages (whose senders'
                // cursors move in the entries the ops made).
                for op in ops {
                    if op.is_entry_field_change() {
                        deferred.push(op);
                    } else {
                        op.apply(shards, map)?;
                    }
                }
                for (message, activity) in &messages {
                    replay_message(shards, map, index, message, *activity, Link::None)?;
                }
            }
        }
    }
    Ok(deferred)
}

fn replay_message(
    shards: &[ShardDb],
    map: ShardMap,
    index: usize,
    message: &StoredMessage,
    activity: u64,
    link: Link,
) -> Result<()> {
    let shard = &shards[index];
    let c = message.conversation;
    let seq = message.seq;
    let floor = || crate::retention::first_retained(&shard.log, &c);
    let mut writes = Vec::new();
    match link {
        Link::None => {}
        // The marks the event stands for, exactly as the writer made them (unless
        // retention has taken the message since).
        Link::Recalls(target) => {
            if target >= floor()? && !shard.log.contains_key(segments::recalled_key(&c, target))? {
                let recall = Recall {
                    by_user: message.sender,
                    at_ms: message.server_time_ms,
                };
                let mut seqs = segments::edit_events(&shard.log, &c, target)?;
                seqs.push(target);
                recall_writes(&shard.log, &c, &seqs, recall, &mut writes)?;
            }
        }
        Link::Edits(edit) => {
            let previous = EditMark::read(&shard.log, &c, edit.target)?;
            let applied = previous.is_some_and(|m| m.event_seq >= seq);
            if edit.target >= floor()? && !applied {
                let mut earlier = segments::edit_events(&shard.log, &c, edit.target)?;
                earlier.retain(|&e| e < seq);
                edit_writes(
                    &shard.log,
                    &c,
                    edit,
                    previous,
                    &earlier,
                    message,
                    &mut writes,
                )?;
            }
        }
    }
    for (k, v) in writes {
        shard.log.insert(k, v)?;
    }
    if seq == 1 && !c.is_group() {
        register_direct(shards, map, &[c], message.server_time_ms)?;
    }
    if let Some((k, v)) =
        segments::mention_entry(message).filter(|_| !matches!(link, Link::Edits(_)))
    {
        shard.log.insert(k, v)?;
    }
    shard
        .log
        .insert(segments::has_sent_key(&c, message.sender), &[])?;
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
    Ok(())
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

pub(crate) fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}
