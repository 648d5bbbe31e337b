//! Reactions: which users reacted to which message with which emoji. A batch of
//! reaction changes in one conversation is one commit with the event that tells
//! the participants of it (an event in the conversation's log, with its own seq,
//! built by the caller from the changes that took effect and the new totals), so a
//! client syncing from its cursor learns of every reaction, and after a crash the
//! reactions and their event are there together or not at all.
//!
//! The embedded store keeps one key per reaction in the conversation's shard,
//! `'q' conv seq emoji_len emoji user` → when, and counts them on read (a page of
//! history is one range scan); PostgreSQL keeps a `reactions` table.

use bytes::Bytes;
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys::{self, CONV_LEN};
use crate::ops::{Op, Tree};
use crate::writer::{Event, OpsRequest, PlanContext, Planned};
use crate::{Appended, Store};

/// Longest emoji (or short reaction name) in bytes.
pub const MAX_EMOJI_BYTES: usize = 32;

/// One user's reaction to one message, added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReactionChange {
    /// The message.
    pub seq: u64,
    /// Who reacts.
    pub user: u64,
    /// The reaction.
    pub emoji: String,
    /// Added (true) or removed.
    pub added: bool,
}

/// How many users reacted to message `seq` with `emoji`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionTotal {
    /// The message.
    pub seq: u64,
    /// The reaction.
    pub emoji: String,
    /// How many users reacted so.
    pub count: u64,
}

/// What a page of history shows of a message's reactions, for one viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    /// The message.
    pub seq: u64,
    /// The reaction.
    pub emoji: String,
    /// How many users reacted so.
    pub count: u64,
    /// The viewer is among those who reacted.
    pub mine: bool,
}

/// Builds the event body from the changes that took effect (in order) and the new
/// totals of every message and emoji they touched.
pub type ReactionEventFn = Box<dyn FnOnce(&[ReactionChange], &[ReactionTotal]) -> Bytes + Send>;

/// What a batch of reaction changes did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reacted {
    /// The changes that took effect (adding a reaction already there, or removing
    /// one that is not, changes nothing).
    pub effective: Vec<ReactionChange>,
    /// Their event, when there were any.
    pub event: Option<Appended>,
}

/// Checks a reaction's emoji: 1..=32 bytes, no control characters.
pub fn validate_emoji(emoji: &str) -> Result<()> {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES || emoji.chars().any(char::is_control) {
        return Err(StorageError::InvalidArgument(
            "a reaction is 1..=32 bytes without control characters",
        ));
    }
    Ok(())
}

const REACTION: u8 = b'q';

/// `'q' conv seq`: the prefix of message `seq`'s reactions.
fn message_prefix(c: &ConversationId, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + CONV_LEN + 8 + 1 + MAX_EMOJI_BYTES + 8);
    k.push(REACTION);
    k.extend_from_slice(&keys::conv(c));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `'q' conv seq len emoji`: the prefix of one emoji's reactions to message `seq`.
fn emoji_prefix(c: &ConversationId, seq: u64, emoji: &str) -> Vec<u8> {
    let mut k = message_prefix(c, seq);
    k.push(emoji.len() as u8);
    k.extend_from_slice(emoji.as_bytes());
    k
}

fn reaction_key(c: &ConversationId, seq: u64, emoji: &str, user: u64) -> Vec<u8> {
    let mut k = emoji_prefix(c, seq, emoji);
    k.extend_from_slice(&user.to_be_bytes());
    k
}

/// A reaction key's seq, emoji and user.
fn parse_key(k: &[u8]) -> Option<(u64, &str, u64)> {
    let rest = k.get(1 + CONV_LEN..)?;
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let len = usize::from(*rest.get(8)?);
    let emoji = std::str::from_utf8(rest.get(9..9 + len)?).ok()?;
    let user = u64::from_be_bytes(rest.get(9 + len..17 + len)?.try_into().ok()?);
    Some((seq, emoji, user))
}

/// The reactions of `c`'s messages `from..=to`, counted, for `viewer`.
pub(crate) fn counts(
    log: &sled::Tree,
    c: &ConversationId,
    from: u64,
    to: u64,
    viewer: u64,
) -> Result<Vec<ReactionCount>> {
    let mut out: Vec<ReactionCount> = Vec::new();
    let end = message_prefix(c, to.saturating_add(1));
    for k in log.range(message_prefix(c, from)..end).keys() {
        let k = k?;
        let (seq, emoji, user) = parse_key(&k).ok_or(StorageError::Corrupt("reaction key"))?;
        match out.last_mut() {
            Some(last) if last.seq == seq && last.emoji == emoji => {
                last.count += 1;
                last.mine |= user == viewer;
            }
            _ => out.push(ReactionCount {
                seq,
                emoji: emoji.to_owned(),
                count: 1,
                mine: user == viewer,
            }),
        }
    }
    // Keys order emoji by length first; callers get them by bytes, as PostgreSQL's.
    out.sort_by(|a, b| (a.seq, &a.emoji).cmp(&(b.seq, &b.emoji)));
    Ok(out)
}

/// Who reacted to message `seq` with `emoji`, by user id above `after`, with when.
pub(crate) fn reactors(
    log: &sled::Tree,
    c: &ConversationId,
    seq: u64,
    emoji: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, u64)>> {
    let prefix = emoji_prefix(c, seq, emoji);
    let start = reaction_key(c, seq, emoji, after.saturating_add(1));
    let mut out = Vec::new();
    for entry in log.range(start..) {
        let (k, v) = entry?;
        if !k.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        let (_, _, user) = parse_key(&k).ok_or(StorageError::Corrupt("reaction key"))?;
        let at = v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Corrupt("reaction"))?;
        out.push((user, at));
    }
    Ok(out)
}

/// The different emoji of message `seq`, at most `limit`: one seek per emoji (past
/// each emoji's users to the next), not a walk over every reaction.
pub(crate) fn kinds(
    log: &sled::Tree,
    c: &ConversationId,
    seq: u64,
    limit: usize,
) -> Result<Vec<String>> {
    let prefix = message_prefix(c, seq);
    let mut out = Vec::new();
    let mut start = prefix.clone();
    while out.len() < limit {
        let Some(entry) = log.range(start.clone()..).next() else {
            break;
        };
        let (k, _) = entry?;
        if !k.starts_with(&prefix) {
            break;
        }
        let (_, emoji, _) = parse_key(&k).ok_or(StorageError::Corrupt("reaction key"))?;
        // Past every user of this emoji: its prefix, then the largest user id and
        // one byte more.
        start = emoji_prefix(c, seq, emoji);
        start.extend_from_slice(&[0xff; 9]);
        out.push(emoji.to_owned());
    }
    Ok(out)
}

/// Drops the reactions of `c`'s messages below `keep_from` (retention).
pub(crate) fn drop_below(log: &sled::Tree, c: &ConversationId, keep_from: u64) -> Result<()> {
    let mut batch = sled::Batch::default();
    for k in log
        .range(message_prefix(c, 0)..message_prefix(c, keep_from))
        .keys()
    {
        batch.remove(k?);
    }
    log.apply_batch(batch)?;
    Ok(())
}

impl Store {
    /// Applies `changes` to `c`'s reactions with the event `event` builds, in one
    /// commit, in order with the conversation's messages; returns once durable.
    pub async fn react(
        &self,
        c: &ConversationId,
        changes: Vec<ReactionChange>,
        event: ReactionEventFn,
    ) -> Result<Reacted> {
        for change in &changes {
            validate_emoji(&change.emoji)?;
        }
        let conversation = *c;
        let shard = self.inner.map.conversation(c);
        let request = OpsRequest {
            conversation: Some(conversation),
            // Counts read what came before; what comes after reads these.
            alone: true,
            plan: Box::new(move |ctx| plan_reactions(ctx, conversation, changes, event)),
        };
        let (effective, events) = self.run_ops::<Vec<ReactionChange>>(shard, request).await?;
        Ok(Reacted {
            effective,
            event: events.first().copied(),
        })
    }

    /// The reactions of `c`'s messages `from..=to`, counted, for `viewer`.
    pub fn reaction_counts(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
        viewer: u64,
    ) -> Result<Vec<ReactionCount>> {
        counts(
            &self.shard(self.inner.map.conversation(c)).log,
            c,
            from,
            to,
            viewer,
        )
    }

    /// The different emoji of message `seq` of `c`, at most `limit`.
    pub fn reaction_kinds(
        &self,
        c: &ConversationId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        kinds(
            &self.shard(self.inner.map.conversation(c)).log,
            c,
            seq,
            limit,
        )
    }

    /// Who reacted to message `seq` of `c` with `emoji` (user ids above `after`,
    /// ascending, at most `limit`), with when.
    pub fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        reactors(log, c, seq, emoji, after, limit)
    }
}

/// Decides which changes take effect (against the committed reactions and the
/// earlier changes of the batch), writes them and counts the new totals.
fn plan_reactions(
    ctx: &PlanContext<'_>,
    c: ConversationId,
    changes: Vec<ReactionChange>,
    event: ReactionEventFn,
) -> Result<Planned> {
    let shard = ctx.map.conversation(&c);
    let log = &ctx.shards[shard].log;
    let mut now_there: std::collections::HashMap<Vec<u8>, bool> = Default::default();
    let mut effective = Vec::new();
    let mut ops = Vec::new();
    for change in changes {
        let key = reaction_key(&c, change.seq, &change.emoji, change.user);
        let there = match now_there.get(&key) {
            Some(&there) => there,
            None => log.contains_key(&key)?,
        };
        if there == change.added {
            continue;
        }
        now_there.insert(key.clone(), change.added);
        ops.push(if change.added {
            Op::Put {
                shard: shard as u16,
                tree: Tree::Log,
                key,
                value: ctx.now.to_be_bytes().to_vec(),
            }
        } else {
            Op::Delete {
                shard: shard as u16,
                tree: Tree::Log,
                key,
            }
        });
        effective.push(change);
    }
    if effective.is_empty() {
        return Ok(Planned {
            ops: Vec::new(),
            events: Vec::new(),
            membership: None,
            outcome: Box::new(effective),
        });
    }
    // The totals after the batch: what is stored, with the batch's changes.
    let mut touched: Vec<(u64, String)> =
        effective.iter().map(|e| (e.seq, e.emoji.clone())).collect();
    touched.sort();
    touched.dedup();
    let mut totals = Vec::with_capacity(touched.len());
    for (seq, emoji) in touched {
        let prefix = emoji_prefix(&c, seq, &emoji);
        let mut count = 0u64;
        for k in log.scan_prefix(&prefix).keys() {
            count += 1;
            if now_there.get(k?.as_ref()) == Some(&false) {
                count -= 1;
            }
        }
        for (k, &there) in now_there.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            if there && !log.contains_key(k)? {
                count += 1;
            }
        }
        totals.push(ReactionTotal { seq, emoji, count });
    }
    let body = event(&effective, &totals);
    // The event is no news: it counts in nobody's unread number.
    ops.push(Op::Put {
        shard: shard as u16,
        tree: Tree::Log,
        key: crate::segments::quiet_key(&c, ctx.next_seq).to_vec(),
        value: Vec::new(),
    });
    Ok(Planned {
        ops,
        events: vec![Event {
            sender: 0,
            client_msg_id: format!("reactions-{}-{}", ctx.next_seq, ctx.now),
            body,
        }],
        membership: None,
        outcome: Box::new(effective),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_sort_by_message_then_emoji() {
        let c = ConversationId::Group(7);
        let k = reaction_key(&c, 42, "👍", 9);
        assert_eq!(parse_key(&k), Some((42, "👍", 9)));
        assert!(reaction_key(&c, 41, "🎉", u64::MAX) < k);
        assert!(k.starts_with(&emoji_prefix(&c, 42, "👍")));
        assert!(validate_emoji("👍🏽").is_ok());
        assert!(validate_emoji("").is_err());
        assert!(validate_emoji("a\nb").is_err());
        assert!(validate_emoji(&"x".repeat(33)).is_err());
    }
}
