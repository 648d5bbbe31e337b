//! Recalling a message: its content is erased from the log, leaving a tombstone that
//! says who recalled it and when. The recall *event* (with its own seq, so clients
//! that sync from a cursor learn of it) is appended by the caller as an ordinary
//! system message.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::{Recall, StoredMessage};
use crate::Store;

/// Why a recall was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallRefusal {
    /// No message with that seq (or it is past retention).
    NoMessage,
    /// Recalled already.
    AlreadyRecalled,
}

impl Store {
    /// Erases the content of message `seq` of `c`, keeping a tombstone. Returns the
    /// message as it was. Durable when it returns.
    pub fn recall_message(
        &self,
        c: &ConversationId,
        seq: u64,
        by_user: u64,
        at_ms: u64,
    ) -> Result<Result<StoredMessage, RecallRefusal>> {
        let shard = self.shard(self.inner.map.conversation(c));
        let key = keys::msg(c, seq);
        let _guard = self.lock_for(courier_protocol::conversation::mix(c.shard_hash() ^ seq));
        let Some(value) = shard.log.get(key)? else {
            return Ok(Err(RecallRefusal::NoMessage));
        };
        let original = StoredMessage::decode_value(*c, seq, &value)?;
        if original.recalled.is_some() {
            return Ok(Err(RecallRefusal::AlreadyRecalled));
        }
        let tombstone = StoredMessage {
            body: bytes::Bytes::new(),
            recalled: Some(Recall { by_user, at_ms }),
            ..original.clone()
        };
        // Compare-and-swap: a concurrent change to the record (another recall through
        // a different lock stripe cannot happen, but be strict) fails loudly.
        shard
            .log
            .compare_and_swap(key, Some(value), Some(tombstone.encode_value()))?
            .map_err(|_| StorageError::Corrupt("message changed during recall"))?;
        shard.db.flush()?;
        Ok(Ok(original))
    }
}
