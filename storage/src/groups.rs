//! Groups and their members.
//!
//! A group's record and member list live on the shard of the group's conversation
//! (`groupid_group`, `groupmember_member`, keyed group id first so a member page is a
//! bounded range scan). Each member also has an entry in its own conversation index
//! (`userconv_state`) with the seq after which it may read the log, which is what
//! "my groups" and "my conversations" scan. Changes to one group are serialised by a
//! striped lock; the member count lives in the group record.
//!
//! Who may do what (owners, admins) is the API layer's policy; this module keeps the
//! invariants: one entry per member, the size cap, one owner.

use bytes::{Buf, BufMut};
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys;
use crate::record::ConversationState;
use crate::{now_ms, Store};

const GROUP_V1: u8 = 1;
const MEMBER_V1: u8 = 1;
const MAX_GROUP_NAME_BYTES: usize = 128;

/// Who may join a group without an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Anyone may join by id.
    Open,
    /// Only members' invitations (owners and admins) add people.
    InviteOnly,
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// An ordinary member.
    Member = 1,
    /// May add and remove members and rename the group.
    Admin = 2,
    /// The one owner: everything admins may, plus roles and transfer.
    Owner = 3,
}

impl Role {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Role::Member),
            2 => Some(Role::Admin),
            3 => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A group's settings and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group id (its conversation is `g:<id>`).
    pub id: u64,
    /// Display name.
    pub name: String,
    /// The current owner.
    pub owner: u64,
    /// Who may join.
    pub join_policy: JoinPolicy,
    /// Whether members who join later may read messages from before they joined.
    pub history_visible: bool,
    /// Members now.
    pub member_count: u64,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
}

/// One member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The member's user id.
    pub user_id: u64,
    /// Its role.
    pub role: Role,
    /// The member may read the log after this seq.
    pub joined_seq: u64,
    /// When it joined.
    pub joined_ms: u64,
}

/// The outcome of adding several members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddedMembers {
    /// Added now.
    pub added: Vec<u64>,
    /// Members already.
    pub already_members: Vec<u64>,
    /// Not added: the group reached its size limit.
    pub over_limit: Vec<u64>,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipRefusal {
    /// No such group.
    NoGroup,
    /// The user is a member already.
    AlreadyMember,
    /// The user is not a member.
    NotMember,
    /// The group is at its size limit.
    Full,
    /// The owner cannot be removed or demoted; transfer ownership first.
    IsOwner,
}

impl GroupInfo {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.name.len());
        out.put_u8(GROUP_V1);
        out.put_u64(self.owner);
        out.put_u8(match self.join_policy {
            JoinPolicy::Open => 1,
            JoinPolicy::InviteOnly => 2,
        });
        out.put_u8(u8::from(self.history_visible));
        out.put_u64(self.member_count);
        out.put_u64(self.created_ms);
        out.put_slice(self.name.as_bytes());
        out
    }

    fn decode(id: u64, v: &[u8]) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("group");
        let mut buf = v;
        if buf.remaining() < 27 || buf.get_u8() != GROUP_V1 {
            return Err(corrupt());
        }
        let owner = buf.get_u64();
        let join_policy = match buf.get_u8() {
            1 => JoinPolicy::Open,
            2 => JoinPolicy::InviteOnly,
            _ => return Err(corrupt()),
        };
        let history_visible = buf.get_u8() != 0;
        let member_count = buf.get_u64();
        let created_ms = buf.get_u64();
        let name = std::str::from_utf8(buf).map_err(|_| corrupt())?.to_owned();
        Ok(Self {
            id,
            name,
            owner,
            join_policy,
            history_visible,
            member_count,
            created_ms,
        })
    }
}

impl Member {
    fn encode(&self) -> [u8; 18] {
        let mut out = [0u8; 18];
        let mut buf = &mut out[..];
        buf.put_u8(MEMBER_V1);
        buf.put_u8(self.role as u8);
        buf.put_u64(self.joined_seq);
        buf.put_u64(self.joined_ms);
        out
    }

    fn decode(user_id: u64, v: &[u8]) -> Result<Self> {
        let mut buf = v;
        if buf.len() != 18 || buf.get_u8() != MEMBER_V1 {
            return Err(StorageError::Corrupt("member"));
        }
        let role = Role::from_u8(buf.get_u8()).ok_or(StorageError::Corrupt("member role"))?;
        Ok(Self {
            user_id,
            role,
            joined_seq: buf.get_u64(),
            joined_ms: buf.get_u64(),
        })
    }
}

fn member_key(group: u64, user: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&user.to_be_bytes());
    k
}

impl Store {
    /// Creates a group owned by `owner` (who becomes its first member).
    pub fn create_group(
        &self,
        owner: u64,
        name: &str,
        join_policy: JoinPolicy,
        history_visible: bool,
    ) -> Result<GroupInfo> {
        validate_group_name(name)?;
        // Group ids share sled's id generator with users: unique, never reused.
        let id = self.shard(0).db.generate_id()? + 1;
        let info = GroupInfo {
            id,
            name: name.to_owned(),
            owner,
            join_policy,
            history_visible,
            member_count: 0,
            created_ms: now_ms(),
        };
        let shard = self.group_shard(id);
        shard
            .groupid_group
            .insert(id.to_be_bytes(), info.encode())?;
        match self.add_member(id, owner, Role::Owner, u64::MAX)? {
            Ok(_) => {}
            Err(refusal) => unreachable!("a new group refused its owner: {refusal:?}"),
        }
        self.group(id)?
            .ok_or(StorageError::Corrupt("group vanished"))
    }

    /// A group's record.
    pub fn group(&self, id: u64) -> Result<Option<GroupInfo>> {
        self.group_shard(id)
            .groupid_group
            .get(id.to_be_bytes())?
            .map(|v| GroupInfo::decode(id, &v))
            .transpose()
    }

    /// Changes a group's name and settings.
    pub fn update_group(
        &self,
        id: u64,
        name: Option<&str>,
        join_policy: Option<JoinPolicy>,
        history_visible: Option<bool>,
    ) -> Result<Option<GroupInfo>> {
        if let Some(name) = name {
            validate_group_name(name)?;
        }
        let _guard = self.lock_for(group_lock(id));
        let Some(mut info) = self.group(id)? else {
            return Ok(None);
        };
        if let Some(name) = name {
            info.name = name.to_owned();
        }
        if let Some(p) = join_policy {
            info.join_policy = p;
        }
        if let Some(h) = history_visible {
            info.history_visible = h;
        }
        let shard = self.group_shard(id);
        shard
            .groupid_group
            .insert(id.to_be_bytes(), info.encode())?;
        shard.db.flush()?;
        Ok(Some(info))
    }

    /// `user`'s membership of group `id`.
    pub fn member(&self, id: u64, user: u64) -> Result<Option<Member>> {
        self.group_shard(id)
            .groupmember_member
            .get(member_key(id, user))?
            .map(|v| Member::decode(user, &v))
            .transpose()
    }

    /// Up to `limit` members with ids above `after`, in id order.
    pub fn members(&self, id: u64, after: u64, limit: usize) -> Result<Vec<Member>> {
        let tree = &self.group_shard(id).groupmember_member;
        let start = member_key(id, after.saturating_add(1));
        let end = member_key(id, u64::MAX);
        tree.range(start..=end)
            .take(limit)
            .map(|entry| {
                let (k, v) = entry?;
                let user = u64::from_be_bytes(k[8..16].try_into().expect("16-byte key"));
                Member::decode(user, &v)
            })
            .collect()
    }

    /// Every member id of a group, ascending (for the gateway's member cache).
    pub fn member_ids(&self, id: u64) -> Result<Vec<u64>> {
        let tree = &self.group_shard(id).groupmember_member;
        tree.scan_prefix(id.to_be_bytes())
            .keys()
            .map(|k| {
                Ok(u64::from_be_bytes(
                    k?[8..16].try_into().expect("16-byte key"),
                ))
            })
            .collect()
    }

    /// Adds `user` to group `id` with `role`, unless the group has `max_members`.
    /// The member may read the log after the current last seq, or all of it when the
    /// group's history is visible to new members.
    pub fn add_member(
        &self,
        id: u64,
        user: u64,
        role: Role,
        max_members: u64,
    ) -> Result<Result<Member, MembershipRefusal>> {
        let added = match self.add_members(id, &[user], role, max_members)? {
            Ok(added) => added,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !added.already_members.is_empty() {
            return Ok(Err(MembershipRefusal::AlreadyMember));
        }
        self.member(id, user)?
            .map(Ok)
            .ok_or(StorageError::Corrupt("member vanished"))
    }

    /// Adds many users at once with `role` (one flush per touched shard, not per
    /// user): the way to fill a 100,000-member group. Users past `max_members` are
    /// reported in `over_limit`; a group already full is refused.
    pub fn add_members(
        &self,
        id: u64,
        users: &[u64],
        role: Role,
        max_members: u64,
    ) -> Result<Result<AddedMembers, MembershipRefusal>> {
        let _guard = self.lock_for(group_lock(id));
        let Some(mut info) = self.group(id)? else {
            return Ok(Err(MembershipRefusal::NoGroup));
        };
        let mut out = AddedMembers::default();
        let mut seen = std::collections::HashSet::new();
        for &user in users {
            if !seen.insert(user) {
                continue;
            }
            if self.member(id, user)?.is_some() {
                out.already_members.push(user);
            } else if info.member_count + out.added.len() as u64 >= max_members {
                out.over_limit.push(user);
            } else {
                out.added.push(user);
            }
        }
        if out.added.is_empty() {
            if !out.over_limit.is_empty() {
                return Ok(Err(MembershipRefusal::Full));
            }
            return Ok(Ok(out));
        }
        let conversation = ConversationId::Group(id);
        let joined_seq = if info.history_visible {
            0
        } else {
            self.last_seq(&conversation)?
        };
        let now = now_ms();
        // The users' indexes first: a crash in between leaves entries that grant
        // nothing (membership is checked against the member list).
        let state = ConversationState {
            joined_seq,
            read_seq: joined_seq,
            created_ms: now,
            ..ConversationState::default()
        };
        let mut touched = std::collections::BTreeSet::new();
        for &user in &out.added {
            let index = self.inner.map.user(user);
            self.shard(index)
                .userconv_state
                .insert(keys::user_conv(user, &conversation), &state.encode()[..])?;
            touched.insert(index);
        }
        for index in touched {
            self.shard(index).db.flush()?;
        }
        let mut batch = sled::Batch::default();
        for &user in &out.added {
            let member = Member {
                user_id: user,
                role,
                joined_seq,
                joined_ms: now,
            };
            batch.insert(&member_key(id, user), &member.encode());
        }
        info.member_count += out.added.len() as u64;
        let shard = self.group_shard(id);
        shard.groupmember_member.apply_batch(batch)?;
        shard
            .groupid_group
            .insert(id.to_be_bytes(), info.encode())?;
        shard.db.flush()?;
        Ok(Ok(out))
    }

    /// Removes `user` from group `id` (leave or kick). The owner cannot be removed.
    pub fn remove_member(&self, id: u64, user: u64) -> Result<Result<(), MembershipRefusal>> {
        let _guard = self.lock_for(group_lock(id));
        let Some(mut info) = self.group(id)? else {
            return Ok(Err(MembershipRefusal::NoGroup));
        };
        if self.member(id, user)?.is_none() {
            return Ok(Err(MembershipRefusal::NotMember));
        }
        if info.owner == user {
            return Ok(Err(MembershipRefusal::IsOwner));
        }
        info.member_count = info.member_count.saturating_sub(1);
        let shard = self.group_shard(id);
        shard.groupmember_member.remove(member_key(id, user))?;
        shard
            .groupid_group
            .insert(id.to_be_bytes(), info.encode())?;
        shard.db.flush()?;
        let user_shard = self.shard(self.inner.map.user(user));
        user_shard
            .userconv_state
            .remove(keys::user_conv(user, &ConversationId::Group(id)))?;
        user_shard.db.flush()?;
        Ok(Ok(()))
    }

    /// Makes `user` an admin or a plain member. The owner's role changes only by
    /// transfer.
    pub fn set_role(
        &self,
        id: u64,
        user: u64,
        role: Role,
    ) -> Result<Result<Member, MembershipRefusal>> {
        if role == Role::Owner {
            return self.transfer_ownership(id, user);
        }
        let _guard = self.lock_for(group_lock(id));
        let Some(info) = self.group(id)? else {
            return Ok(Err(MembershipRefusal::NoGroup));
        };
        let Some(mut member) = self.member(id, user)? else {
            return Ok(Err(MembershipRefusal::NotMember));
        };
        if info.owner == user {
            return Ok(Err(MembershipRefusal::IsOwner));
        }
        member.role = role;
        let shard = self.group_shard(id);
        shard
            .groupmember_member
            .insert(member_key(id, user), &member.encode())?;
        shard.db.flush()?;
        Ok(Ok(member))
    }

    /// Makes member `new_owner` the owner; the old owner becomes an admin.
    pub fn transfer_ownership(
        &self,
        id: u64,
        new_owner: u64,
    ) -> Result<Result<Member, MembershipRefusal>> {
        let _guard = self.lock_for(group_lock(id));
        let Some(mut info) = self.group(id)? else {
            return Ok(Err(MembershipRefusal::NoGroup));
        };
        let Some(mut member) = self.member(id, new_owner)? else {
            return Ok(Err(MembershipRefusal::NotMember));
        };
        let shard = self.group_shard(id);
        if let Some(mut old) = self.member(id, info.owner)? {
            old.role = Role::Admin;
            shard
                .groupmember_member
                .insert(member_key(id, info.owner), &old.encode())?;
        }
        member.role = Role::Owner;
        info.owner = new_owner;
        shard
            .groupmember_member
            .insert(member_key(id, new_owner), &member.encode())?;
        shard
            .groupid_group
            .insert(id.to_be_bytes(), info.encode())?;
        shard.db.flush()?;
        Ok(Ok(member))
    }

    fn group_shard(&self, id: u64) -> &crate::shard::ShardDb {
        self.shard(self.inner.map.conversation(&ConversationId::Group(id)))
    }
}

fn group_lock(id: u64) -> u64 {
    id.rotate_left(17) ^ 0x6a09_e667_f3bc_c908
}

fn validate_group_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > MAX_GROUP_NAME_BYTES {
        return Err(StorageError::InvalidArgument(
            "group name must be 1 to 128 bytes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[test]
    fn membership_rules() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let g = s
            .create_group(1, "team", JoinPolicy::InviteOnly, false)
            .unwrap();
        assert_eq!(g.member_count, 1);
        assert_eq!(s.member(g.id, 1).unwrap().unwrap().role, Role::Owner);
        assert!(s.add_member(g.id, 2, Role::Member, 3).unwrap().is_ok());
        assert_eq!(
            s.add_member(g.id, 2, Role::Member, 3).unwrap(),
            Err(MembershipRefusal::AlreadyMember)
        );
        assert!(s.add_member(g.id, 3, Role::Member, 3).unwrap().is_ok());
        assert_eq!(
            s.add_member(g.id, 4, Role::Member, 3).unwrap(),
            Err(MembershipRefusal::Full)
        );
        assert_eq!(s.member_ids(g.id).unwrap(), vec![1, 2, 3]);
        assert_eq!(s.members(g.id, 1, 10).unwrap().len(), 2);
        assert_eq!(
            s.remove_member(g.id, 1).unwrap(),
            Err(MembershipRefusal::IsOwner)
        );
        s.transfer_ownership(g.id, 2).unwrap().unwrap();
        assert_eq!(s.member(g.id, 1).unwrap().unwrap().role, Role::Admin);
        assert_eq!(s.group(g.id).unwrap().unwrap().owner, 2);
        s.remove_member(g.id, 1).unwrap().unwrap();
        assert_eq!(s.group(g.id).unwrap().unwrap().member_count, 2);
        assert!(s
            .conversation_state(1, &ConversationId::Group(g.id))
            .unwrap()
            .is_none());
        assert!(s
            .conversation_state(3, &ConversationId::Group(g.id))
            .unwrap()
            .is_some());
        // Bulk adds: duplicates and existing members are sorted out, the cap holds.
        let big = s.create_group(9, "big", JoinPolicy::Open, false).unwrap();
        let users: Vec<u64> = (100..20_100).chain([100, 9]).collect();
        let added = s
            .add_members(big.id, &users, Role::Member, 10_000)
            .unwrap()
            .unwrap();
        assert_eq!(added.added.len(), 9_999);
        assert_eq!(added.already_members, vec![9]);
        assert_eq!(added.over_limit.len(), 10_001);
        assert_eq!(s.group(big.id).unwrap().unwrap().member_count, 10_000);
        assert_eq!(s.member_ids(big.id).unwrap().len(), 10_000);
        assert_eq!(
            s.add_members(big.id, &[1], Role::Member, 10_000).unwrap(),
            Err(MembershipRefusal::Full)
        );
        let renamed = s
            .update_group(g.id, Some("crew"), Some(JoinPolicy::Open), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (renamed.name.as_str(), renamed.join_policy),
            ("crew", JoinPolicy::Open)
        );
    }
}
