//! History retention: removing a conversation's oldest messages, by count or age.
//! Seqs never restart (the last seq is kept apart from the messages), and the first
//! seq still retained is recorded so that clients are told where history now begins.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::StoredMessage;
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
        let log = &self.shard(self.inner.map.conversation(c)).log;
        match log.get(retained_key(c))? {
            Some(v) => decode_u64(&v).ok_or(StorageError::Corrupt("retained seq")),
            None => Ok(1),
        }
    }

    /// The first seq of `c` stored at or after `time_ms` (None: every message is older).
    pub fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Result<Option<u64>> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        for entry in log.scan_prefix(keys::msg_prefix(c)) {
            let (k, v) = entry?;
            let seq = keys::msg_seq(&k).ok_or(StorageError::Corrupt("message key"))?;
            if StoredMessage::decode_value(*c, seq, &v)?.server_time_ms >= time_ms {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    /// Deletes every message of `c` below `keep_from` and records where history now
    /// begins. Returns how many messages were deleted.
    pub fn prune_history(&self, c: &ConversationId, keep_from: u64) -> Result<usize> {
        let shard = self.shard(self.inner.map.conversation(c));
        let first = self.first_retained_seq(c)?;
        if keep_from <= first {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let mut deleted = 0;
        for key in shard
            .log
            .range(keys::msg(c, first)..keys::msg(c, keep_from))
            .keys()
        {
            batch.remove(key?);
            deleted += 1;
        }
        batch.insert(&retained_key(c), &keep_from.to_be_bytes());
        shard.log.apply_batch(batch)?;
        shard.db.flush()?;
        Ok(deleted)
    }
}
