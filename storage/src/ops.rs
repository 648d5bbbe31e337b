//! Operations other than plain message appends that go through a shard's writer:
//! group membership, relations, read cursors and flags, device bindings. Each one is
//! one commit-log record (together with any messages it stores, such as a
//! membership event), durable before it is acknowledged, and applied to the indexes
//! by the same code live and at replay, so after a crash it is there whole or not at
//! all.
//!
//! Two kinds of [`Op`]:
//! - **Physical** (`Put`, `Delete`): the value a key ends up with. Every such key has
//!   one *home* log that all its writes go through (a group's records: the group's
//!   shard; a friend pair: the shard of the lower user id; a user's devices: the
//!   user's shard), so replaying each log in order replays each key in order.
//! - **Per-user conversation entries** (`Join`, `Leave`, `Cursor`, `Flags`), which
//!   several logs write (memberships through the group's log, cursors through the
//!   user's): each names the membership it belongs to (the entry's `since_seq`), and
//!   applies in a way that does not depend on the order of the logs: a join keeps a
//!   newer membership, a leave removes only older ones, a cursor or flag change
//!   applies only to the membership it was made for. Replay applies joins and leaves
//!   of every log before any cursor or flag change.

use bytes::{Buf, BufMut};
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::ConversationState;
use crate::shard::{ShardDb, ShardMap};

/// The trees physical ops may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tree {
    Group = 1,
    Member = 2,
    Relation = 3,
    Device = 4,
    PushToken = 5,
    /// The conversation log's index tree (reactions live there).
    Log = 6,
}

impl Tree {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Tree::Group,
            2 => Tree::Member,
            3 => Tree::Relation,
            4 => Tree::Device,
            5 => Tree::PushToken,
            6 => Tree::Log,
            _ => return None,
        })
    }

    fn of(self, shard: &ShardDb) -> &sled::Tree {
        match self {
            Tree::Group => &shard.groupid_group,
            Tree::Member => &shard.groupmember_member,
            Tree::Relation => &shard.userpeer_relation,
            Tree::Device => &shard.userdevice_device,
            Tree::PushToken => &shard.pushtoken_device,
            Tree::Log => &shard.log,
        }
    }
}

/// One change to the indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `key` in `tree` of shard `shard` becomes `value`.
    Put {
        shard: u16,
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// `key` in `tree` of shard `shard` is removed.
    Delete {
        shard: u16,
        tree: Tree,
        key: Vec<u8>,
    },
    /// `user` joins `conversation` with `state` (its `since_seq` names the membership),
    /// unless the entry there belongs to this membership or a newer one.
    Join {
        user: u64,
        conversation: ConversationId,
        state: ConversationState,
    },
    /// `user` leaves `conversation`: its entry goes if it belongs to a membership
    /// older than `before`.
    Leave {
        user: u64,
        conversation: ConversationId,
        before: u64,
    },
    /// Moves the read and delivered cursors of membership `since` up (never down).
    Cursor {
        user: u64,
        conversation: ConversationId,
        since: u64,
        read: u64,
        delivered: u64,
    },
    /// Sets the muted and pinned flags of membership `since`.
    Flags {
        user: u64,
        conversation: ConversationId,
        since: u64,
        muted: Option<bool>,
        pinned: Option<bool>,
    },
}

const PUT: u8 = 1;
const DELETE: u8 = 2;
const JOIN: u8 = 3;
const LEAVE: u8 = 4;
const CURSOR: u8 = 5;
const FLAGS: u8 = 6;

impl Op {
    /// Whether replay applies this op in the second pass (after every log's joins and
    /// leaves).
    pub fn is_entry_field_change(&self) -> bool {
        matches!(self, Op::Cursor { .. } | Op::Flags { .. })
    }

    /// Applies the op to the indexes (not flushed: the commit log makes it durable).
    pub fn apply(&self, shards: &[ShardDb], map: ShardMap) -> Result<()> {
        match self {
            Op::Put {
                shard,
                tree,
                key,
                value,
            } => {
                let shard = shards
                    .get(*shard as usize)
                    .ok_or(StorageError::Corrupt("op shard"))?;
                tree.of(shard).insert(key.as_slice(), value.as_slice())?;
            }
            Op::Delete { shard, tree, key } => {
                let shard = shards
                    .get(*shard as usize)
                    .ok_or(StorageError::Corrupt("op shard"))?;
                tree.of(shard).remove(key.as_slice())?;
            }
            Op::Join {
                user,
                conversation,
                state,
            } => update_entry(shards, map, *user, conversation, |old| match old {
                Some(old) if old.since_seq >= state.since_seq => Some(old),
                _ => Some(*state),
            })?,
            Op::Leave {
                user,
                conversation,
                before,
            } => update_entry(shards, map, *user, conversation, |old| match old {
                Some(old) if old.since_seq >= *before => Some(old),
                _ => None,
            })?,
            Op::Cursor {
                user,
                conversation,
                since,
                read,
                delivered,
            } => update_entry(shards, map, *user, conversation, |old| {
                old.map(|mut s| {
                    if s.since_seq == *since {
                        s.read_seq = s.read_seq.max(*read);
                        s.delivered_seq = s.delivered_seq.max(*delivered);
                    }
                    s
                })
            })?,
            Op::Flags {
                user,
                conversation,
                since,
                muted,
                pinned,
            } => update_entry(shards, map, *user, conversation, |old| {
                old.map(|mut s| {
                    if s.since_seq == *since {
                        s.muted = muted.unwrap_or(s.muted);
                        s.pinned = pinned.unwrap_or(s.pinned);
                    }
                    s
                })
            })?,
        }
        Ok(())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Put {
                shard,
                tree,
                key,
                value,
            } => {
                out.put_u8(PUT);
                out.put_u16(*shard);
                out.put_u8(*tree as u8);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { shard, tree, key } => {
                out.put_u8(DELETE);
                out.put_u16(*shard);
                out.put_u8(*tree as u8);
                put_bytes(out, key);
            }
            Op::Join {
                user,
                conversation,
                state,
            } => {
                out.put_u8(JOIN);
                out.put_u64(*user);
                out.put_slice(&keys::conv(conversation));
                out.put_slice(&state.encode());
            }
            Op::Leave {
                user,
                conversation,
                before,
            } => {
                out.put_u8(LEAVE);
                out.put_u64(*user);
                out.put_slice(&keys::conv(conversation));
                out.put_u64(*before);
            }
            Op::Cursor {
                user,
                conversation,
                since,
                read,
                delivered,
            } => {
                out.put_u8(CURSOR);
                out.put_u64(*user);
                out.put_slice(&keys::conv(conversation));
                out.put_u64(*since);
                out.put_u64(*read);
                out.put_u64(*delivered);
            }
            Op::Flags {
                user,
                conversation,
                since,
                muted,
                pinned,
            } => {
                out.put_u8(FLAGS);
                out.put_u64(*user);
                out.put_slice(&keys::conv(conversation));
                out.put_u64(*since);
                out.put_u8(tri(*muted));
                out.put_u8(tri(*pinned));
            }
        }
    }

    pub fn decode(buf: &mut &[u8]) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("commit log op");
        let need = |buf: &&[u8], n: usize| {
            if buf.remaining() < n {
                Err(corrupt())
            } else {
                Ok(())
            }
        };
        need(buf, 1)?;
        let tag = buf.get_u8();
        let op = match tag {
            PUT | DELETE => {
                need(buf, 3)?;
                let shard = buf.get_u16();
                let tree = Tree::from_u8(buf.get_u8()).ok_or_else(corrupt)?;
                let key = get_bytes(buf).ok_or_else(corrupt)?;
                if tag == PUT {
                    let value = get_bytes(buf).ok_or_else(corrupt)?;
                    Op::Put {
                        shard,
                        tree,
                        key,
                        value,
                    }
                } else {
                    Op::Delete { shard, tree, key }
                }
            }
            JOIN | LEAVE | CURSOR | FLAGS => {
                need(buf, 8 + keys::CONV_LEN)?;
                let user = buf.get_u64();
                let conversation = keys::parse_conv(&buf[..keys::CONV_LEN]).ok_or_else(corrupt)?;
                buf.advance(keys::CONV_LEN);
                match tag {
                    JOIN => {
                        need(buf, 42)?;
                        let state = ConversationState::decode(&buf[..42])?;
                        buf.advance(42);
                        Op::Join {
                            user,
                            conversation,
                            state,
                        }
                    }
                    LEAVE => {
                        need(buf, 8)?;
                        Op::Leave {
                            user,
                            conversation,
                            before: buf.get_u64(),
                        }
                    }
                    CURSOR => {
                        need(buf, 24)?;
                        Op::Cursor {
                            user,
                            conversation,
                            since: buf.get_u64(),
                            read: buf.get_u64(),
                            delivered: buf.get_u64(),
                        }
                    }
                    _ => {
                        need(buf, 10)?;
                        Op::Flags {
                            user,
                            conversation,
                            since: buf.get_u64(),
                            muted: untri(buf.get_u8()).ok_or_else(corrupt)?,
                            pinned: untri(buf.get_u8()).ok_or_else(corrupt)?,
                        }
                    }
                }
            }
            _ => return Err(corrupt()),
        };
        Ok(op)
    }
}

/// Encodes a list of ops (count first).
pub(crate) fn encode_ops(ops: &[Op], out: &mut Vec<u8>) {
    out.put_u32(ops.len() as u32);
    for op in ops {
        op.encode(out);
    }
}

/// Decodes what [`encode_ops`] wrote; the whole rest of `buf` must be ops.
pub(crate) fn decode_ops(mut buf: &[u8]) -> Result<Vec<Op>> {
    if buf.remaining() < 4 {
        return Err(StorageError::Corrupt("commit log ops"));
    }
    let count = buf.get_u32() as usize;
    // Each op takes at least 4 bytes: the count cannot ask for more than that.
    if count > buf.remaining() / 4 + 1 {
        return Err(StorageError::Corrupt("commit log ops"));
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(Op::decode(&mut buf)?);
    }
    if buf.has_remaining() {
        return Err(StorageError::Corrupt("commit log ops"));
    }
    Ok(ops)
}

/// Rewrites `user`'s entry for `c` with `change` (given the entry, or none; returns
/// the new one, or none to remove it).
fn update_entry(
    shards: &[ShardDb],
    map: ShardMap,
    user: u64,
    c: &ConversationId,
    change: impl Fn(Option<ConversationState>) -> Option<ConversationState>,
) -> Result<()> {
    let tree = &shards[map.user(user)].userconv_state;
    let mut failed = None;
    tree.update_and_fetch(keys::user_conv(user, c), |old| {
        let state = match old.map(ConversationState::decode).transpose() {
            Ok(state) => state,
            Err(e) => {
                failed = Some(e);
                return old.map(<[u8]>::to_vec);
            }
        };
        change(state).map(|s| s.encode().to_vec())
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn get_bytes(buf: &mut &[u8]) -> Option<Vec<u8>> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return None;
    }
    let out = buf[..len].to_vec();
    buf.advance(len);
    Some(out)
}

fn tri(v: Option<bool>) -> u8 {
    match v {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn untri(v: u8) -> Option<Option<bool>> {
    match v {
        0 => Some(None),
        1 => Some(Some(false)),
        2 => Some(Some(true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn conversation() -> impl Strategy<Value = ConversationId> {
        prop_oneof![
            any::<u64>().prop_map(ConversationId::Group),
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| ConversationId::Direct {
                low: a.min(b),
                high: a.max(b),
            }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let tree = prop_oneof![
            Just(Tree::Group),
            Just(Tree::Member),
            Just(Tree::Relation),
            Just(Tree::Device),
            Just(Tree::PushToken)
        ];
        let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
        let flag = proptest::option::of(any::<bool>());
        prop_oneof![
            (any::<u16>(), tree.clone(), bytes(), bytes()).prop_map(|(shard, tree, key, value)| {
                Op::Put {
                    shard,
                    tree,
                    key,
                    value,
                }
            }),
            (any::<u16>(), tree, bytes()).prop_map(|(shard, tree, key)| Op::Delete {
                shard,
                tree,
                key
            }),
            (
                any::<u64>(),
                conversation(),
                any::<[u64; 4]>(),
                any::<[bool; 2]>()
            )
                .prop_map(|(user, conversation, n, f)| Op::Join {
                    user,
                    conversation,
                    state: ConversationState {
                        read_seq: n[0],
                        delivered_seq: n[1],
                        joined_seq: n[2],
                        muted: f[0],
                        pinned: f[1],
                        created_ms: n[3],
                        since_seq: n[0] ^ n[3],
                    },
                }),
            (any::<u64>(), conversation(), any::<u64>()).prop_map(
                |(user, conversation, before)| {
                    Op::Leave {
                        user,
                        conversation,
                        before,
                    }
                }
            ),
            (any::<u64>(), conversation(), any::<[u64; 3]>()).prop_map(
                |(user, conversation, n)| {
                    Op::Cursor {
                        user,
                        conversation,
                        since: n[0],
                        read: n[1],
                        delivered: n[2],
                    }
                }
            ),
            (
                any::<u64>(),
                conversation(),
                any::<u64>(),
                flag.clone(),
                flag
            )
                .prop_map(|(user, conversation, since, muted, pinned)| Op::Flags {
                    user,
                    conversation,
                    since,
                    muted,
                    pinned,
                }),
        ]
    }

    proptest! {
        #[test]
        fn ops_round_trip(ops in proptest::collection::vec(op(), 0..8)) {
            let mut out = Vec::new();
            encode_ops(&ops, &mut out);
            prop_assert_eq!(decode_ops(&out).unwrap(), ops);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_ops(&bytes);
        }
    }
}
