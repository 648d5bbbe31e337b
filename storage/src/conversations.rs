//! Reading conversation logs and the per-user conversation index.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::{ConversationState, StoredMessage};
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
        let log = &self.shard(self.inner.map.conversation(c)).log;
        let lowest = floor.saturating_add(1);
        let empty = HistoryPage {
            messages: Vec::new(),
            has_more: false,
        };
        let (from, to) = match range {
            HistoryRange::Latest => (lowest, u64::MAX),
            HistoryRange::Before(seq) if seq <= lowest => return Ok(empty),
            HistoryRange::Before(seq) => (lowest, seq - 1),
            HistoryRange::After(u64::MAX) => return Ok(empty),
            HistoryRange::After(seq) => (seq.saturating_add(1).max(lowest), u64::MAX),
        };
        let iter = log.range(keys::msg(c, from)..=keys::msg(c, to));
        let entries: Vec<_> = match range {
            HistoryRange::After(_) => iter.take(limit + 1).collect::<Result<_, _>>()?,
            _ => iter.rev().take(limit + 1).collect::<Result<_, _>>()?,
        };
        let has_more = entries.len() > limit;
        let mut messages = entries
            .into_iter()
            .take(limit)
            .map(|(k, v)| {
                let seq = keys::msg_seq(&k).ok_or(StorageError::Corrupt("message key"))?;
                StoredMessage::decode_value(*c, seq, &v)
            })
            .collect::<Result<Vec<_>>>()?;
        if !matches!(range, HistoryRange::After(_)) {
            messages.reverse();
        }
        Ok(HistoryPage { messages, has_more })
    }

    /// One message by seq.
    pub fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        log.get(keys::msg(c, seq))?
            .map(|v| StoredMessage::decode_value(*c, seq, &v))
            .transpose()
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

    /// Whether `user` has ever sent a message in `c` (its idempotency entries outlive
    /// retention, so this stays true once true).
    pub fn has_sent(&self, c: &ConversationId, user: u64) -> Result<bool> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        Ok(log
            .scan_prefix(keys::idem(c, user, ""))
            .next()
            .transpose()?
            .is_some())
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
    /// the last seq) and returns the cursor now in force.
    pub fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        let last = self.last_seq(c)?;
        let target = seq.min(last);
        let state = self.update_state(user, c, |s| s.read_seq = s.read_seq.max(target))?;
        Ok(state.read_seq)
    }

    /// Sets the muted and pinned flags of `user`'s entry for `c`.
    pub fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<ConversationState> {
        self.update_state(user, c, |s| {
            if let Some(m) = muted {
                s.muted = m;
            }
            if let Some(p) = pinned {
                s.pinned = p;
            }
        })
    }

    /// Records that a device of `user` holds every message of `c` up to `seq`.
    pub fn mark_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        let last = self.last_seq(c)?;
        let target = seq.min(last);
        let state =
            self.update_state(user, c, |s| s.delivered_seq = s.delivered_seq.max(target))?;
        Ok(state.delivered_seq)
    }

    fn update_state(
        &self,
        user: u64,
        c: &ConversationId,
        change: impl Fn(&mut ConversationState),
    ) -> Result<ConversationState> {
        let tree = &self.shard(self.inner.map.user(user)).userconv_state;
        let key = keys::user_conv(user, c);
        let mut failed = None;
        let updated = tree.update_and_fetch(key, |old| {
            let old = old?;
            match ConversationState::decode(old) {
                Ok(mut state) => {
                    change(&mut state);
                    Some(state.encode().to_vec())
                }
                Err(e) => {
                    failed = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let value = updated.ok_or(StorageError::NotParticipant)?;
        ConversationState::decode(&value)
    }
}
