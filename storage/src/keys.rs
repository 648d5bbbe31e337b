//! Key layout.
//!
//! Every key puts the id that scopes a scan first, big-endian, so "all messages of a
//! conversation" or "all conversations of a user" is one prefix scan. Trees are named
//! `<key>_<value>` after the Conduit convention.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `log` | `'R' conv first_seq` | a run of the conversation's messages in a sealed log segment ([`crate::segments`]) |
//! | `log` | `'S' segment` | (empty): the segment is sealed, its runs are here |
//! | `log` | `'h' conv user` | (empty): the user has sent in the conversation |
//! | `log` | `'x' conv seq` | who recalled the message, and when |
//! | `log` | `'X' conv seq` | (empty): the recalled message's body awaits its erasure on disk |
//! | `log` | `'s' conv` | the conversation's last seq and last activity ([`Tail`]) |
//! | `log` | `'a'` | the highest activity count this shard has written |
//! | `log` | `'L'` | the commit-log position from which an open replays (every shard's indexes are flushed up to it) |
//! | `log` | `'r' conv` | the first seq still retained (after pruning) |
//! | `log` | `'k' conv seq` | (empty): an edit or reactions event, which counts in nobody's unread number |
//! | `log` | `'b' conv user` | who banned the user from the group, when ([`crate::Ban`]) |
//! | `userconv_state` | `user conv` | [`crate::UserConversation`] state |
//! | `username_userid` | user name | user id |
//! | `userid_account` | user id | account record |
//! | `tokenhash_session` | sha256(token) | user id, expiry, devices ([`crate::TokenInfo`]) |
//! | `usertoken_expiry` | `user sha256(token)` | expiry: a user's tokens |
//! | `usergroup_invite` | `user group` | inviter, when: pending group invitations |
//! | `groupuser_request` | `group user` | when, message: pending join requests |
//! | `userpeer_relation` | `user peer` | the user's view of the pair ([`crate::Relation`]) |
//! | `groupid_group` | group id | [`crate::GroupInfo`] |
//! | `groupmember_member` | `group user` | [`crate::Member`] |
//! | `userdevice_device` | `user device_id` | [`crate::Device`] |
//! | `sha_blob` | sha256 (32 bytes) | [`crate::BlobRecord`] |
//! | `shauser_owner` | `sha256 user` | (empty): who uploaded a blob |
//!
//! The messages themselves are not in sled: they stay in the commit log's segments,
//! which `segments` indexes, so that sled holds nothing per message. Everything a
//! commit writes to sled is applied again from the log after a crash.

use courier_protocol::ConversationId;

/// Encoded size of a conversation id inside keys.
pub const CONV_LEN: usize = 17;

/// Prefix byte of last-seq entries in the `log` tree.
pub const LAST_SEQ: u8 = b's';

/// A conversation id as a fixed-width key part.
pub fn conv(c: &ConversationId) -> [u8; CONV_LEN] {
    let mut out = [0u8; CONV_LEN];
    match *c {
        ConversationId::Direct { low, high } => {
            out[0] = b'd';
            out[1..9].copy_from_slice(&low.to_be_bytes());
            out[9..17].copy_from_slice(&high.to_be_bytes());
        }
        ConversationId::Group(id) => {
            out[0] = b'g';
            out[1..9].copy_from_slice(&id.to_be_bytes());
        }
    }
    out
}

/// The inverse of [`conv`].
pub fn parse_conv(bytes: &[u8]) -> Option<ConversationId> {
    if bytes.len() != CONV_LEN {
        return None;
    }
    let a = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let b = u64::from_be_bytes(bytes[9..17].try_into().ok()?);
    match bytes[0] {
        b'd' if a < b => Some(ConversationId::Direct { low: a, high: b }),
        b'g' if b == 0 => Some(ConversationId::Group(a)),
        _ => None,
    }
}

/// `conv sender client_msg_id` — what tells one send from another within a batch.
pub fn idem(c: &ConversationId, sender: u64, client_msg_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + CONV_LEN + 8 + client_msg_id.len());
    out.extend_from_slice(&conv(c));
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(client_msg_id.as_bytes());
    out
}

/// `'s' conv` — the last seq of a conversation (kept apart from the messages so that
/// retention can delete old messages without seqs ever restarting).
pub fn last_seq(c: &ConversationId) -> [u8; 1 + CONV_LEN] {
    let mut out = [0u8; 1 + CONV_LEN];
    out[0] = LAST_SEQ;
    out[1..].copy_from_slice(&conv(c));
    out
}

/// The key of the commit-log position up to which the shard's indexes hold every
/// record (written in the same batch as the records it covers).
pub const APPLIED: [u8; 1] = [b'L'];

/// Prefix byte of the shard's activity high-water mark in the `log` tree.
pub const ACTIVITY: u8 = b'a';

/// The key of the shard's activity high-water mark.
pub const ACTIVITY_HWM: [u8; 1] = [ACTIVITY];

/// What the `'s' conv` entry holds: the last seq, and the activity count of the
/// conversation's last message — a counter over the whole store that orders
/// conversations by when they last moved (not by a clock: two conversations active in
/// the same millisecond still come out in the order they were written). Entries
/// written before activity was recorded hold only the seq; their activity reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last seq.
    pub seq: u64,
    /// The activity count of the last append (0: not recorded).
    pub activity: u64,
}

impl Tail {
    /// The stored form.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.activity.to_be_bytes());
        out
    }

    /// Reads a stored form (16 bytes, or 8 from before activity was recorded).
    pub fn decode(v: &[u8]) -> Option<Self> {
        match v.len() {
            8 => Some(Self {
                seq: u64::from_be_bytes(v.try_into().ok()?),
                activity: 0,
            }),
            16 => Some(Self {
                seq: u64::from_be_bytes(v[..8].try_into().ok()?),
                activity: u64::from_be_bytes(v[8..].try_into().ok()?),
            }),
            _ => None,
        }
    }
}

/// `user conv` — a user's state in one conversation.
pub fn user_conv(user: u64, c: &ConversationId) -> [u8; 8 + CONV_LEN] {
    let mut out = [0u8; 8 + CONV_LEN];
    out[..8].copy_from_slice(&user.to_be_bytes());
    out[8..].copy_from_slice(&conv(c));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_key_round_trips() {
        for c in [
            ConversationId::direct(5, 1).unwrap(),
            ConversationId::Group(9),
        ] {
            assert_eq!(parse_conv(&conv(&c)), Some(c));
        }
        assert_eq!(parse_conv(&[0u8; 3]), None);
    }
}
