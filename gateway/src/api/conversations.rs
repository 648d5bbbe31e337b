//! The conversation list, read cursors and per-user flags (mute, pin).

use std::cmp::Reverse;

use bytes::Bytes;
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{encode_frame, ConversationId};
use courier_storage::StorageError;

use crate::api::dto::{ConversationList, ConversationView, ReadsView};
use crate::api::{convert, Api};
use crate::error::ApiError;

/// Largest page of the conversation list.
pub const MAX_LIST_PAGE: usize = 200;

/// Sort key of the list: pinned first, then latest activity (the store's activity
/// counter, then the time for conversations last active before the counter existed),
/// then id.
type SortKey = (Reverse<bool>, Reverse<u64>, Reverse<u64>, String);

fn sort_key(v: &ConversationView, activity: u64) -> SortKey {
    (
        Reverse(v.pinned),
        Reverse(activity),
        Reverse(v.last_activity_ms),
        v.conversation.clone(),
    )
}

fn encode_cursor(k: &SortKey) -> String {
    format!("{}:{}:{}:{}", u8::from(k.0 .0), k.1 .0, k.2 .0, k.3)
}

fn decode_cursor(s: &str) -> Result<SortKey, ApiError> {
    let bad = || ApiError::invalid("bad cursor");
    let mut parts = s.splitn(4, ':');
    let pinned = parts.next().ok_or_else(bad)? == "1";
    let activity = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let time = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let conversation = parts.next().ok_or_else(bad)?.to_owned();
    Ok((
        Reverse(pinned),
        Reverse(activity),
        Reverse(time),
        conversation,
    ))
}

impl Api {
    /// A page of `user`'s conversations: pinned first, then by last activity.
    pub async fn conversation_list(
        &self,
        user: u64,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ConversationList, ApiError> {
        let limit = limit.clamp(1, MAX_LIST_PAGE);
        let after = cursor.map(decode_cursor).transpose()?;
        let mut views = Vec::new();
        // What the user cleared: conversations cleared through their last message
        // are deleted from its list (until the next message).
        let mut cleared = std::collections::HashMap::new();
        for c in self.store.views_changed_since(user, 0).await?.1 {
            cleared.insert(c, self.store.hidden_view(user, &c, 0).await?.cleared_seq);
        }
        for entry in self.store.conversations(user).await? {
            let c = entry.conversation;
            let cleared_seq = cleared.get(&c).copied().unwrap_or(0);
            if cleared_seq > 0 && entry.last_seq <= cleared_seq {
                continue;
            }
            let floor = entry.state.joined_seq.max(cleared_seq);
            let last = match entry.last_seq > floor {
                true => self.store.message(&c, entry.last_seq).await?,
                false => None,
            };
            let (kind, peer, group, name) = match c {
                ConversationId::Direct { .. } => {
                    let peer = c.peer_of(user);
                    let name = match peer {
                        Some(p) => self.store.account(p).await?.map(|a| a.name),
                        None => None,
                    };
                    ("direct", peer, None, name)
                }
                ConversationId::Group(g) => (
                    "group",
                    None,
                    Some(g),
                    self.store.group(g).await?.map(|i| i.name),
                ),
            };
            let activity = entry.last_activity;
            let read = entry.state.read_seq.max(floor);
            let mentions = match entry.last_seq > read {
                true => self.store.mention_count(&c, user, read).await?,
                false => 0,
            };
            views.push((
                activity,
                ConversationView {
                    conversation: c.to_string(),
                    kind: kind.into(),
                    peer,
                    group,
                    name,
                    last_seq: entry.last_seq,
                    read_seq: entry.state.read_seq.max(floor),
                    unread: self.unread(&c, entry.last_seq, read).await?,
                    mentions,
                    last_activity_ms: last
                        .as_ref()
                        .map_or(entry.state.created_ms, |m| m.server_time_ms),
                    last_message: last.as_ref().map(convert::to_view),
                    muted: entry.state.muted,
                    pinned: entry.state.pinned,
                },
            ));
        }
        views.sort_by_cached_key(|(activity, v)| sort_key(v, *activity));
        let mut page: Vec<(u64, ConversationView)> = views
            .into_iter()
            .filter(|(activity, v)| after.as_ref().is_none_or(|a| &sort_key(v, *activity) > a))
            .take(limit + 1)
            .collect();
        let next_cursor = if page.len() > limit {
            page.truncate(limit);
            page.last()
                .map(|(activity, v)| encode_cursor(&sort_key(v, *activity)))
        } else {
            None
        };
        Ok(ConversationList {
            conversations: page.into_iter().map(|(_, v)| v).collect(),
            next_cursor,
        })
    }

    /// Moves `user`'s read cursor in `c` forward, durably, and tells the user's other
    /// devices (all of them when `from_device` is `None`). Returns the cursor.
    pub async fn mark_read(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
        from_device: Option<&str>,
    ) -> Result<u64, ApiError> {
        self.authorize(user, c).await?;
        let read_seq = match self.store.mark_read(user, c, seq).await {
            // A direct conversation with no message yet is in nobody's list.
            Err(StorageError::NotParticipant) => 0,
            other => other?,
        };
        self.announce_read(user, c, read_seq, from_device);
        Ok(read_seq)
    }

    fn announce_read(
        &self,
        user: u64,
        c: &ConversationId,
        read_seq: u64,
        from_device: Option<&str>,
    ) {
        let receipt = Frame::new(
            0,
            Kind::ReadReceipt(pb::ReadReceipt {
                conversation: c.to_string(),
                reader: user,
                seq: read_seq,
                readers: 0,
            }),
        );
        let wire: Bytes = encode_frame(&receipt);
        self.registry
            .push_to_user(user, &wire, from_device.map(|device| (user, device)));
        if read_seq > 0 {
            self.receipts.read(user, *c, read_seq);
            if let Some(push) = &self.push {
                push.read(user, c, read_seq, from_device);
            }
        }
    }

    /// Who has read message `seq` of `c` (the sender itself not counted).
    pub async fn reads(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
    ) -> Result<ReadsView, ApiError> {
        let message = self.visible_message(user, c, seq).await?;
        let (participants, list_readers): (Vec<u64>, bool) = match *c {
            ConversationId::Direct { low, high } => {
                // Across a block, the peer's reading is not shown.
                let peer = if user == low { high } else { low };
                let relation = self.store.relation(user, peer).await?;
                match relation.blocking || relation.blocked_by {
                    true => (vec![user], true),
                    false => (vec![low, high], true),
                }
            }
            ConversationId::Group(g) => {
                let members = self.members.members(g).await?;
                let small = members.len() <= self.config.receipt_push_max_group;
                (members.to_vec(), small)
            }
        };
        let others: Vec<u64> = participants
            .into_iter()
            .filter(|&p| p != message.sender)
            .collect();
        let readers = crate::api::receipts::readers_at(self.store.as_ref(), c, &others, seq).await;
        Ok(ReadsView {
            conversation: c.to_string(),
            seq,
            count: readers.len() as u64,
            readers: list_readers.then_some(readers),
        })
    }

    /// Sets mute and pin flags of `user`'s entry for `c`, durably.
    pub async fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<(), ApiError> {
        self.authorize(user, c).await?;
        let set = self
            .store
            .set_conversation_flags(user, c, muted, pinned)
            .await;
        match set {
            Err(StorageError::NotParticipant) => Err(ApiError::new(
                courier_protocol::ErrorCode::NotFound,
                "the conversation has no messages yet",
            )),
            other => other.map(drop).map_err(Into::into),
        }
    }
}
