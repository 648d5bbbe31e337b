//! Group invitations: a user is added to a group only once it accepts (or by the
//! API layer's policy: friends, or anyone). Kept on the invitee's shard, keyed user
//! first, so "my invitations" is one prefix scan.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `usergroup_invite` | `user group` | inviter, when |

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::Store;

/// Pending invitations one user may hold; a new one past this drops the oldest.
pub const MAX_PENDING_INVITATIONS: usize = 100;

/// A pending invitation to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invitation {
    /// The group.
    pub group_id: u64,
    /// Who invited.
    pub inviter: u64,
    /// When (ms since the Unix epoch).
    pub created_ms: u64,
}

fn key(user: u64, group: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&user.to_be_bytes());
    k[8..].copy_from_slice(&group.to_be_bytes());
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<Invitation> {
    let corrupt = || StorageError::Corrupt("invitation");
    if k.len() != 16 || v.len() != 16 {
        return Err(corrupt());
    }
    let mut key = &k[8..];
    let mut value = v;
    Ok(Invitation {
        group_id: key.get_u64(),
        inviter: value.get_u64(),
        created_ms: value.get_u64(),
    })
}

impl Store {
    /// Records that `inviter` invites `user` to `group` (an existing invitation is
    /// kept as it was). Returns whether it is new.
    pub fn invite(&self, user: u64, group: u64, inviter: u64, now_ms: u64) -> Result<bool> {
        let shard = self.shard(self.inner.map.user(user));
        let tree = &shard.usergroup_invite;
        let k = key(user, group);
        if tree.contains_key(k)? {
            return Ok(false);
        }
        let pending = self.invitations(user)?;
        if pending.len() >= MAX_PENDING_INVITATIONS {
            if let Some(oldest) = pending.iter().min_by_key(|i| (i.created_ms, i.group_id)) {
                tree.remove(key(user, oldest.group_id))?;
            }
        }
        let mut v = Vec::with_capacity(16);
        v.put_u64(inviter);
        v.put_u64(now_ms);
        tree.insert(k, v)?;
        shard.db.flush()?;
        Ok(true)
    }

    /// `user`'s pending invitations, by group id.
    pub fn invitations(&self, user: u64) -> Result<Vec<Invitation>> {
        let tree = &self.shard(self.inner.map.user(user)).usergroup_invite;
        tree.scan_prefix(user.to_be_bytes())
            .map(|entry| {
                let (k, v) = entry?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Removes `user`'s invitation to `group` and returns it, if there was one.
    pub fn take_invitation(&self, user: u64, group: u64) -> Result<Option<Invitation>> {
        let shard = self.shard(self.inner.map.user(user));
        let k = key(user, group);
        let Some(v) = shard.usergroup_invite.remove(k)? else {
            return Ok(None);
        };
        shard.db.flush()?;
        decode(&k, &v).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreConfig};

    #[test]
    fn invite_list_take() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        assert!(s.invite(1, 10, 2, 100).unwrap());
        assert!(
            !s.invite(1, 10, 3, 200).unwrap(),
            "the first invitation stands"
        );
        assert!(s.invite(1, 11, 2, 300).unwrap());
        assert!(s.invitations(2).unwrap().is_empty());
        let pending = s.invitations(1).unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!((pending[0].group_id, pending[0].inviter), (10, 2));
        assert_eq!(s.take_invitation(1, 10).unwrap().unwrap().inviter, 2);
        assert_eq!(s.take_invitation(1, 10).unwrap(), None);
        assert_eq!(s.invitations(1).unwrap().len(), 1);
    }

    #[test]
    fn the_oldest_invitation_gives_way_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        for g in 0..super::MAX_PENDING_INVITATIONS as u64 + 1 {
            s.invite(1, 1000 + g, 2, g).unwrap();
        }
        let pending = s.invitations(1).unwrap();
        assert_eq!(pending.len(), super::MAX_PENDING_INVITATIONS);
        assert!(pending.iter().all(|i| i.group_id != 1000));
    }
}
