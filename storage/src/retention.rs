//! History retention: removing a conversation's oldest messages, by count or age.
//! Seqs never restart (the last seq is kept apart from the messages), and the first
//! seq still retained is recorded so that clients are told where history now begins.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::writer::decode_u64;
use crate::Store;

/// Prefix byte of first-retained-seq entries in the `log` tree.
const RETAINED: u8 = b'r';

pub(crate) fn retained_key(c: &ConversationId) -> [u8; 1 + keys::CONV_LEN] {
    let mut k = [0u8; 1 + keys::CONV_LEN];
    k[0] = RETAINED;
    k[1..].copy_from_slice(&keys::conv(c));
    k
}

impl Store {
    /// Every conversation with messages, and its last seq.
    pub fn all_conversations(&self) -> Result<Vec<(ConversationId, u64)>> {
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            for entry in shard.log.scan_prefix([keys::LAST_SEQ]) {
                let (k, v) = entry?;
                let c = keys::parse_conv(&k[1..]).ok_or(StorageError::Corrupt("last seq key"))?;
                let tail = keys::Tail::decode(&v).ok_or(StorageError::Corrupt("last seq"))?;
                out.push((c, tail.seq));
            }
        }
        Ok(out)
    }

    /// The oldest seq of `c` history still holds (1 when nothing was pruned).
    pub fn first_retained_seq(&self, c: &ConversationId) -> Result<u64> {
        first_retained(&self.shard(self.inner.map.conversation(c)).log, c)
    }

    /// The first seq of `c` stored at or after `time_ms` (None: every message is older).
    /// Seqs are stored in time order, so this is a binary search.
    pub fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Result<Option<u64>> {
        let time_of = |seq: u64| -> Result<u64> {
            Ok(self
                .read_messages(c, seq, seq)?
                .pop()
                .map_or(0, |m| m.server_time_ms))
        };
        let (mut lo, mut hi) = (self.first_retained_seq(c)?, self.last_seq(c)?);
        if hi < lo || time_of(hi)? < time_ms {
            return Ok(None);
        }
        // The first seq in lo..=hi whose time is at or after `time_ms`; hi is one.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if time_of(mid)? >= time_ms {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(Some(lo))
    }

    /// Hides every message of `c` below `keep_from` and records where history now
    /// begins; their space is freed once every message of their log segments is
    /// gone ([`Self::reclaim`]). Returns how many messages were pruned.
    pub fn prune_history(&self, c: &ConversationId, keep_from: u64) -> Result<usize> {
        let shard = self.shard(self.inner.map.conversation(c));
        let first = self.first_retained_seq(c)?;
        if keep_from <= first {
            return Ok(0);
        }
        let pruned = keep_from.min(self.last_seq(c)? + 1).saturating_sub(first);
        shard
            .log
            .insert(retained_key(c), &keep_from.to_be_bytes())?;
        crate::segments::Segments::drop_runs_below(&shard.log, c, keep_from)?;
        crate::reactions::drop_below(&shard.log, c, keep_from)?;
        shard.db.flush()?;
        Ok(pruned as usize)
    }

    /// Deletes the log segments that retention has emptied (every message in them
    /// is below its conversation's floor) and that lie before the last checkpoint.
    /// Returns the bytes freed.
    pub fn reclaim(&self) -> Result<u64> {
        let mut freed = 0;
        for (index, segments) in self.inner.segments.iter().enumerate() {
            let log = &self.shard(index).log;
            let checkpoint =
                self.inner.checkpointed[index].load(std::sync::atomic::Ordering::Acquire);
            freed += segments.reclaim(log, checkpoint, |conv| {
                let c = keys::parse_conv(conv).ok_or(StorageError::Corrupt("run conversation"))?;
                first_retained(log, &c)
            })?;
        }
        Ok(freed)
    }
}

/// The first seq of `c` its shard's log tree still holds (1 when nothing was pruned).
pub(crate) fn first_retained(log: &sled::Tree, c: &ConversationId) -> Result<u64> {
    match log.get(retained_key(c))? {
        Some(v) => decode_u64(&v).ok_or(StorageError::Corrupt("retained seq")),
        None => Ok(1),
    }
}
