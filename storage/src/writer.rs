//! The per-shard writer thread: the message queue between the API layer and the store.
//!
//! Each shard owns the conversations that hash to it, and only its writer assigns
//! their seqs, so seqs are gap-free and strictly increasing without locks. The writer
//! takes whatever queued up while it was busy (up to `max_batch`), writes the whole
//! batch atomically, flushes once, and only then answers each waiter: one fsync covers
//! every message of the batch (group commit). Committed messages are handed to the
//! commit listener in seq order (which is how the gateway routes deliveries) before
//! the waiters are answered.

use std::collections::HashMap;
use std::sync::Arc;

use courier_protocol::ConversationId;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::{ConversationState, StoredMessage};
use crate::shard::{ShardDb, ShardMap};
use crate::{now_ms, AppendRequest, Appended, CommitListener};

pub(crate) enum Command {
    Append(AppendRequest, oneshot::Sender<Result<Appended>>),
    /// Commit what came before, then stop; later commands are dropped (their waiters
    /// see the store as shut down).
    Shutdown,
}

pub(crate) struct Writer {
    pub index: usize,
    pub shards: Arc<[ShardDb]>,
    pub map: ShardMap,
    pub listener: Option<Arc<dyn CommitListener>>,
    pub max_batch: usize,
    pub seq_cache_entries: usize,
    pub seq_cache: HashMap<[u8; keys::CONV_LEN], u64>,
    pub stats: std::sync::Arc<crate::stats::CommitStats>,
    /// The store-wide activity counter: every stored message takes the next count.
    pub activity: Arc<std::sync::atomic::AtomicU64>,
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
        if let Err(e) = self.shard().db.flush() {
            tracing::error!(shard = self.index, error = %e, "final flush failed");
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
            let seq = match self.next_seq(&req.conversation) {
                Ok(seq) => seq,
                Err(e) => {
                    outcomes.push((reply, Outcome::Failed(e)));
                    continue;
                }
            };
            if seq == 1 && !req.conversation.is_group() {
                new_direct.push(req.conversation);
            }
            let activity = self
                .activity
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
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
            log_batch.insert(&keys::msg(&req.conversation, seq), message.encode_value());
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
            let durable = self
                .register_direct(&new_direct, now)
                .and_then(|()| Ok(self.shard().log.apply_batch(log_batch)?))
                .and_then(|()| Ok(self.shard().db.flush().map(drop)?));
            self.stats
                .flush_us
                .observe(started.elapsed().as_micros() as u64);
            self.stats.batch_size.observe(committed.len() as u64);
            if let Err(e) = durable {
                self.stats
                    .failed_commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(shard = self.index, error = %e, "group commit failed");
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

        // The listener runs before the waiters hear back: once an append is
        // acknowledged its deliveries are already queued, so whatever the caller does
        // next (remove the member a system event is about, answer on the same
        // connection) happens after them.
        if let (Some(listener), false) = (&self.listener, committed.is_empty()) {
            listener.committed(&committed);
        }
        for (reply, outcome) in outcomes {
            let result = match outcome {
                Outcome::Fresh(a) | Outcome::Stored(a) => Ok(a),
                Outcome::Failed(e) => Err(e),
            };
            // The waiter may have given up (connection closed); the message is stored anyway.
            let _ = reply.send(result);
        }
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
            let tree = &self.shards[self.map.user(user)].userconv_state;
            let result = tree.update_and_fetch(keys::user_conv(user, &c), |old| {
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

    /// Adds new 1:1 conversations to both participants' indexes, durably, before the
    /// first message is written: a stored message is never missing from a user's list.
    fn register_direct(&self, convs: &[ConversationId], now: u64) -> Result<()> {
        let mut touched = Vec::new();
        for c in convs {
            let ConversationId::Direct { low, high } = *c else {
                continue;
            };
            for user in [low, high] {
                let shard = self.map.user(user);
                let state = ConversationState {
                    created_ms: now,
                    ..ConversationState::default()
                };
                // Keeps an existing entry (and its read cursor) untouched.
                let _ = self.shards[shard].userconv_state.compare_and_swap(
                    keys::user_conv(user, c),
                    None as Option<&[u8]>,
                    Some(&state.encode()[..]),
                )?;
                if shard != self.index && !touched.contains(&shard) {
                    touched.push(shard);
                }
            }
        }
        for shard in touched {
            self.shards[shard].db.flush()?;
        }
        Ok(())
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
