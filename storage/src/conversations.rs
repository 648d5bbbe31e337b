//! Reading conversation logs and the per-user conversation index.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::ops::Op;
use crate::record::{ConversationState, StoredMessage};
use crate::writer::OpsRequest;
use crate::Store;

/// Which part of a log a history page covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// The newest messages.
    Latest,
    /// Messages with a seq below this one.
    Before(u64),
    /// Messages with a seq above this one.
    After(u64),
}

impl HistoryRange {
    /// The seqs `from..=to` of the page of at most `limit` messages this range asks
    /// for, and whether more lie beyond it in the direction of paging, in a log
    /// whose seqs run gap-free from `lowest` (the retention floor, or above what a
    /// reader may see) to `last`; `None` when the page is empty. The same rule for
    /// every backend.
    pub fn page(self, last: u64, lowest: u64, limit: usize) -> Option<(u64, u64, bool)> {
        let limit = (limit as u64).max(1);
        if last < lowest {
            return None;
        }
        Some(match self {
            HistoryRange::Latest => {
                let from = last.saturating_sub(limit - 1).max(lowest);
                (from, last, from > lowest)
            }
            HistoryRange::Before(seq) if seq <= lowest => return None,
            HistoryRange::Before(seq) => {
                let to = (seq - 1).min(last);
                let from = to.saturating_sub(limit - 1).max(lowest);
                (from, to, from > lowest)
            }
            HistoryRange::After(seq) => {
                let from = seq.saturating_add(1).max(lowest);
                if from > last {
                    return None;
                }
                let to = from.saturating_add(limit - 1).min(last);
                (from, to, to < last)
            }
        })
    }
}

/// One page of a conversation log, in ascending seq order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether more messages lie beyond this page in the direction of paging.
    pub has_more: bool,
}

/// One entry of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConversation {
    /// The conversation.
    pub conversation: ConversationId,
    /// The user's state in it.
    pub state: ConversationState,
    /// The conversation's newest seq.
    pub last_seq: u64,
    /// When the conversation last moved, as a store-wide counter (higher = later; 0
    /// for conversations last written before the counter existed).
    pub last_activity: u64,
}

impl Store {
    /// A page of at most `limit` messages (capped by `max_page`) from `c`.
    pub fn history(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.history_above(c, range, limit, 0)
    }

    /// Like [`Self::history`], but never shows messages with a seq at or below
    /// `floor` (a group member who joined at `floor` does not see what came before).
    pub fn history_above(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
        floor: u64,
    ) -> Result<HistoryPage> {
        let limit = limit.clamp(1, self.inner.config.max_page);
        let lowest = floor.saturating_add(1).max(self.first_retained_seq(c)?);
        let Some((from, to, has_more)) = range.page(self.last_seq(c)?, lowest, limit) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        let messages = self.read_messages(c, from, to)?;
        Ok(HistoryPage { messages, has_more })
    }

    /// Messages `from..=to` of `c` from its shard's message store.
    pub(crate) fn read_messages(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredMessage>> {
        let shard = self.inner.map.conversation(c);
        self.inner.segments[shard].read_range(&self.shard(shard).log, c, from, to)
    }

    /// One message by seq.
    pub fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>> {
        if seq == 0 || seq > self.last_seq(c)? || seq < self.first_retained_seq(c)? {
            return Ok(None);
        }
        Ok(self.read_messages(c, seq, seq)?.pop())
    }

    /// The newest seq of `c` (0 when it has no messages).
    pub fn last_seq(&self, c: &ConversationId) -> Result<u64> {
        Ok(self.tail(c)?.seq)
    }

    /// The newest seq of `c` and the activity count of its last message.
    pub(crate) fn tail(&self, c: &ConversationId) -> Result<keys::Tail> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        match log.get(keys::last_seq(c))? {
            Some(v) => keys::Tail::decode(&v).ok_or(StorageError::Corrupt("last seq")),
            None => Ok(keys::Tail::default()),
        }
    }

    /// Whether `user` has ever sent a message in `c` (the mark outlives retention,
    /// so this stays true once true).
    pub fn has_sent(&self, c: &ConversationId, user: u64) -> Result<bool> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        Ok(log.contains_key(crate::segments::has_sent_key(c, user))?)
    }

    /// `user`'s state in `c`, if `c` is in the user's conversation list.
    pub fn conversation_state(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<Option<ConversationState>> {
        let tree = &self.shard(self.inner.map.user(user)).userconv_state;
        tree.get(keys::user_conv(user, c))?
            .map(|v| ConversationState::decode(&v))
            .transpose()
    }

    /// All conversations in `user`'s list, with their last seqs, in id order.
    pub fn conversations(&self, user: u64) -> Result<Vec<UserConversation>> {
        let tree = &self.shard(self.inner.map.user(user)).userconv_state;
        let mut out = Vec::new();
        for entry in tree.scan_prefix(user.to_be_bytes()) {
            let (k, v) = entry?;
            let conversation =
                keys::parse_conv(&k[8..]).ok_or(StorageError::Corrupt("conversation key"))?;
            let state = ConversationState::decode(&v)?;
            let tail = self.tail(&conversation)?;
            out.push(UserConversation {
                conversation,
                state,
                last_seq: tail.seq,
                last_activity: tail.activity,
            });
        }
        Ok(out)
    }

    /// Moves `user`'s read cursor in `c` forward to `seq` (never backward, never past
    /// the last seq) and returns the cursor now in force, once the move is durable.
    pub async fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        let (state, move_to) = self.cursor_move(user, c, seq, |s| s.read_seq)?;
        let Some(read) = move_to else {
            return Ok(state.read_seq);
        };
        let op = Op::Cursor {
            user,
            conversation: *c,
            since: state.since_seq,
            read,
            delivered: 0,
        };
        self.log_user_op(user, op).await?;
        Ok(read)
    }

    /// Records that a device of `user` holds every message of `c` up to `seq`;
    /// returns the delivered cursor now in force. Not logged: devices acknowledge
    /// deliveries by the thousand and are not answered, so a crash may lose the
    /// newest (each acknowledgement covers every seq below it, and the next one
    /// repairs it). The cursor only moves up, on the membership it was made for.
    pub fn note_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        let (state, move_to) = self.cursor_move(user, c, seq, |s| s.delivered_seq)?;
        let Some(delivered) = move_to else {
            return Ok(state.delivered_seq);
        };
        Op::Cursor {
            user,
            conversation: *c,
            since: state.since_seq,
            read: 0,
            delivered,
        }
        .apply(&self.inner.shards, self.inner.map)?;
        Ok(delivered)
    }

    /// `user`'s entry for `c`, and where the cursor `cursor` picks from it moves to
    /// for `seq` (capped by the last seq; none when it would not move forward).
    fn cursor_move(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
        cursor: impl Fn(&ConversationState) -> u64,
    ) -> Result<(ConversationState, Option<u64>)> {
        let target = seq.min(self.last_seq(c)?);
        let state = self
            .conversation_state(user, c)?
            .ok_or(StorageError::NotParticipant)?;
        let forward = (target > cursor(&state)).then_some(target);
        Ok((state, forward))
    }

    /// Sets the muted and pinned flags of `user`'s entry for `c`, durably.
    pub async fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<ConversationState> {
        let mut state = self
            .conversation_state(user, c)?
            .ok_or(StorageError::NotParticipant)?;
        let op = Op::Flags {
            user,
            conversation: *c,
            since: state.since_seq,
            muted,
            pinned,
        };
        self.log_user_op(user, op).await?;
        state.muted = muted.unwrap_or(state.muted);
        state.pinned = pinned.unwrap_or(state.pinned);
        Ok(state)
    }

    /// Logs and applies one op through the writer of `user`'s shard (batched with
    /// that shard's messages) and returns once it is durable.
    async fn log_user_op(&self, user: u64, op: Op) -> Result<()> {
        self.run_ops::<()>(self.inner.map.user(user), OpsRequest::decided(vec![op]))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::HistoryRange;

    #[test]
    fn pages_lie_between_the_floor_and_the_last_seq() {
        assert_eq!(HistoryRange::Latest.page(25, 1, 10), Some((16, 25, true)));
        assert_eq!(HistoryRange::Latest.page(5, 1, 10), Some((1, 5, false)));
        assert_eq!(HistoryRange::Latest.page(0, 1, 10), None);
        assert_eq!(
            HistoryRange::Before(16).page(25, 1, 10),
            Some((6, 15, true))
        );
        assert_eq!(
            HistoryRange::Before(99).page(25, 1, 10),
            Some((16, 25, true))
        );
        assert_eq!(HistoryRange::Before(5).page(25, 1, 10), Some((1, 4, false)));
        assert_eq!(HistoryRange::Before(1).page(25, 1, 10), None);
        assert_eq!(
            HistoryRange::After(20).page(25, 1, 10),
            Some((21, 25, false))
        );
        assert_eq!(HistoryRange::After(25).page(25, 1, 10), None);
        assert_eq!(HistoryRange::After(u64::MAX).page(25, 1, 10), None);
        // A floor (retention, or a member who joined later) hides what is below.
        assert_eq!(
            HistoryRange::After(0).page(25, 23, 10),
            Some((23, 25, false))
        );
        assert_eq!(HistoryRange::Latest.page(25, 30, 10), None);
    }
}
