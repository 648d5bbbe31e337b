//! Who is banned from a group, and who asks to join one.
//!
//! A ban is part of the group's state: it is written by a group change
//! ([`crate::GroupChange::Ban`]) in the group's log, next to the removal it makes,
//! and the writer reads it when it decides an addition, so a ban and a join that
//! race are ordered by the log like everything else in the group.
//!
//! A join request is not: it is a note that a user would like in, kept until the
//! owner or an admin answers it (the answer, when it lets the user in, is a group
//! change with its `MemberJoined` event). Requests live on the group's shard, keyed
//! group first, so "the requests to this group" is one prefix scan.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `log` | `'b' conv user` | who banned, when |
//! | `groupuser_request` | `group user` | when, the request's message |

use bytes::{Buf, BufMut};
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys::{self, CONV_LEN};
use crate::Store;

/// Pending join requests one group keeps; a new one past this drops the oldest.
pub const MAX_PENDING_JOIN_REQUESTS: usize = 1_000;

/// Longest message a join request carries, in bytes.
pub const MAX_JOIN_REQUEST_MESSAGE_BYTES: usize = 512;

/// A user banned from a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// Who is banned.
    pub user_id: u64,
    /// Who banned.
    pub by_user: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// A user's pending request to join a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group.
    pub group_id: u64,
    /// Who asks.
    pub user_id: u64,
    /// What it says to the admins.
    pub message: String,
    /// When (ms since the Unix epoch).
    pub created_ms: u64,
}

const BAN: u8 = b'b';

/// `'b' conv`: the prefix of a group's bans.
fn ban_prefix(group: u64) -> [u8; 1 + CONV_LEN] {
    let mut k = [0u8; 1 + CONV_LEN];
    k[0] = BAN;
    k[1..].copy_from_slice(&keys::conv(&ConversationId::Group(group)));
    k
}

/// `'b' conv user`: one ban's key in the group shard's `log` tree.
pub(crate) fn ban_key(group: u64, user: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + CONV_LEN + 8);
    k.extend_from_slice(&ban_prefix(group));
    k.extend_from_slice(&user.to_be_bytes());
    k
}

pub(crate) fn encode_ban(ban: &Ban) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.put_u64(ban.by_user);
    v.put_u64(ban.at_ms);
    v
}

fn decode_ban(k: &[u8], v: &[u8]) -> Result<Ban> {
    let corrupt = || StorageError::Corrupt("ban");
    let user = k
        .get(1 + CONV_LEN..)
        .filter(|u| u.len() == 8)
        .ok_or_else(corrupt)?;
    if v.len() != 16 {
        return Err(corrupt());
    }
    let mut value = v;
    Ok(Ban {
        user_id: u64::from_be_bytes(user.try_into().map_err(|_| corrupt())?),
        by_user: value.get_u64(),
        at_ms: value.get_u64(),
    })
}

/// Whether `user` is banned from `group` (read from the group shard's `log`).
pub(crate) fn is_banned(log: &sled::Tree, group: u64, user: u64) -> Result<bool> {
    Ok(log.contains_key(ban_key(group, user))?)
}

fn request_key(group: u64, user: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&user.to_be_bytes());
    k
}

fn decode_request(k: &[u8], v: &[u8]) -> Result<JoinRequest> {
    let corrupt = || StorageError::Corrupt("join request");
    if k.len() != 16 || v.len() < 8 {
        return Err(corrupt());
    }
    let mut key = k;
    let mut value = v;
    let group_id = key.get_u64();
    let user_id = key.get_u64();
    let created_ms = value.get_u64();
    Ok(JoinRequest {
        group_id,
        user_id,
        message: std::str::from_utf8(value)
            .map_err(|_| corrupt())?
            .to_owned(),
        created_ms,
    })
}

/// Refuses a join request's message when it is too long.
pub fn validate_join_request(message: &str) -> Result<()> {
    if message.len() > MAX_JOIN_REQUEST_MESSAGE_BYTES {
        return Err(StorageError::InvalidArgument(
            "a join request's message is at most 512 bytes",
        ));
    }
    Ok(())
}

impl Store {
    /// `group`'s bans in user order, after user `after`, at most `limit`.
    pub fn bans(&self, group: u64, after: u64, limit: usize) -> Result<Vec<Ban>> {
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        let shard = self.shard(self.inner.map.conversation(&ConversationId::Group(group)));
        let start = ban_key(group, after + 1);
        let mut end = ban_prefix(group).to_vec();
        end.extend_from_slice(&[0xff; 9]);
        for entry in shard.log.range(start..end).take(limit) {
            let (k, v) = entry?;
            out.push(decode_ban(&k, &v)?);
        }
        Ok(out)
    }

    /// Whether `user` is banned from `group` now.
    pub fn banned(&self, group: u64, user: u64) -> Result<bool> {
        let shard = self.shard(self.inner.map.conversation(&ConversationId::Group(group)));
        is_banned(&shard.log, group, user)
    }

    /// Records that `user` asks to join `group` (a pending request is replaced by
    /// the new one). Returns whether there was none before.
    pub fn request_join(&self, group: u64, user: u64, message: &str, now_ms: u64) -> Result<bool> {
        validate_join_request(message)?;
        let shard = self.shard(self.inner.map.conversation(&ConversationId::Group(group)));
        let tree = &shard.groupuser_request;
        let k = request_key(group, user);
        let new = !tree.contains_key(k)?;
        if new {
            let pending = self.join_requests(group, 0, usize::MAX)?;
            if pending.len() >= MAX_PENDING_JOIN_REQUESTS {
                if let Some(oldest) = pending.iter().min_by_key(|r| (r.created_ms, r.user_id)) {
                    tree.remove(request_key(group, oldest.user_id))?;
                }
            }
        }
        let mut v = Vec::with_capacity(8 + message.len());
        v.put_u64(now_ms);
        v.put_slice(message.as_bytes());
        tree.insert(k, v)?;
        shard.db.flush()?;
        Ok(new)
    }

    /// `group`'s pending join requests in user order, after user `after`, at most
    /// `limit`.
    pub fn join_requests(&self, group: u64, after: u64, limit: usize) -> Result<Vec<JoinRequest>> {
        let shard = self.shard(self.inner.map.conversation(&ConversationId::Group(group)));
        if after == u64::MAX {
            return Ok(Vec::new());
        }
        let start = request_key(group, after.saturating_add(1));
        let end = request_key(group, u64::MAX);
        let mut out = Vec::new();
        // `end` itself is user u64::MAX, never a real user.
        for entry in shard.groupuser_request.range(start..end).take(limit) {
            let (k, v) = entry?;
            out.push(decode_request(&k, &v)?);
        }
        Ok(out)
    }

    /// Removes `user`'s request to join `group` and returns it, if there was one.
    pub fn take_join_request(&self, group: u64, user: u64) -> Result<Option<JoinRequest>> {
        let shard = self.shard(self.inner.map.conversation(&ConversationId::Group(group)));
        let k = request_key(group, user);
        let Some(v) = shard.groupuser_request.remove(k)? else {
            return Ok(None);
        };
        shard.db.flush()?;
        decode_request(&k, &v).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[test]
    fn ban_records_round_trip() {
        let ban = Ban {
            user_id: 7,
            by_user: 3,
            at_ms: 1_700_000_000_000,
        };
        let k = ban_key(42, 7);
        assert_eq!(decode_ban(&k, &encode_ban(&ban)).unwrap(), ban);
        assert!(decode_ban(&k, &[0; 15]).is_err());
        assert!(decode_ban(&k[..k.len() - 1], &encode_ban(&ban)).is_err());
    }

    #[test]
    fn join_requests_list_replace_take_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        assert!(s.request_join(10, 5, "hi", 100).unwrap());
        assert!(!s.request_join(10, 5, "hello again", 200).unwrap());
        assert!(s.request_join(10, 6, "", 300).unwrap());
        assert!(s.request_join(11, 5, "other group", 300).unwrap());
        let pending = s.join_requests(10, 0, 10).unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(
            (
                pending[0].user_id,
                pending[0].message.as_str(),
                pending[0].created_ms
            ),
            (5, "hello again", 200)
        );
        assert_eq!(s.join_requests(10, 5, 10).unwrap()[0].user_id, 6);
        assert_eq!(s.join_requests(10, 0, 1).unwrap().len(), 1);
        assert!(s.request_join(10, 7, &"x".repeat(513), 1).is_err());
        assert_eq!(
            s.take_join_request(10, 5).unwrap().unwrap().message,
            "hello again"
        );
        assert_eq!(s.take_join_request(10, 5).unwrap(), None);
        assert_eq!(s.join_requests(10, 0, 10).unwrap().len(), 1);

        for u in 100..100 + MAX_PENDING_JOIN_REQUESTS as u64 {
            s.request_join(12, u, "", 1_000 + u).unwrap();
        }
        s.request_join(12, 5_000, "", 9_999_999).unwrap();
        let pending = s.join_requests(12, 0, usize::MAX).unwrap();
        assert_eq!(pending.len(), MAX_PENDING_JOIN_REQUESTS);
        assert_eq!(pending[0].user_id, 101, "the oldest gave way");
    }
}
