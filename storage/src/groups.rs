//! Groups and their members: the records, and reading them.
//!
//! A group's record and member list live on the shard of the group's conversation
//! (`groupid_group`, `groupmember_member`, keyed group id first so a member page is a
//! bounded range scan). Each member also has an entry in its own conversation index
//! (`userconv_state`) with the seq after which it may read the log, which is what
//! "my groups" and "my conversations" scan. Every change goes through the group
//! shard's writer (`group_changes`), which keeps the invariants: one entry per
//! member, the size cap, one owner.
//!
//! Who may do what (owners, admins) is the API layer's policy.

use bytes::{Buf, BufMut};
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::Store;

const GROUP_V1: u8 = 1;
const GROUP_V2: u8 = 2;
const GROUP_V3: u8 = 3;
/// Longest group description, in bytes.
pub const MAX_GROUP_DESCRIPTION_BYTES: usize = 1024;
/// Longest group announcement, in bytes.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 4096;
const MEMBER_V1: u8 = 1;
const MEMBER_V2: u8 = 2;
const MEMBER_V3: u8 = 3;
const MAX_GROUP_NAME_BYTES: usize = 128;

/// Who may join a group without an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Anyone may join by id.
    Open,
    /// Only members' invitations (owners and admins) add people.
    InviteOnly,
    /// Anyone may ask to join by id; the owner or an admin approves each request.
    Approval,
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
    /// Only the owner and admins may send (the whole group is muted).
    pub muted: bool,
    /// The owner dismissed the group: nobody sends, nobody joins; its history
    /// stays readable to its members.
    pub dismissed: bool,
    /// What the group is about (empty: nothing said).
    pub description: String,
    /// The group's picture: the SHA-256 of an uploaded image (empty: none).
    pub avatar: String,
    /// The pinned announcement (empty: none).
    pub announcement: Announcement,
}

/// A group's pinned announcement: each change is a new version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// The text (empty: taken down).
    pub text: String,
    /// 1 for the first announcement, up by one with each change (0: never).
    pub version: u64,
    /// When it was last changed (ms since the Unix epoch).
    pub at_ms: u64,
    /// Who changed it last.
    pub by_user: u64,
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
    /// The seq of the group event that added it: it receives messages from there on.
    pub since_seq: u64,
    /// The member may not send before this time (ms since the Unix epoch; 0: not
    /// muted).
    pub muted_until_ms: u64,
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
    /// Not added: banned from the group.
    pub banned: Vec<u64>,
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
    /// The user is banned from the group.
    Banned,
}

impl GroupInfo {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            80 + self.name.len()
                + self.description.len()
                + self.avatar.len()
                + self.announcement.text.len(),
        );
        out.put_u8(GROUP_V3);
        out.put_u64(self.owner);
        out.put_u8(match self.join_policy {
            JoinPolicy::Open => 1,
            JoinPolicy::InviteOnly => 2,
            JoinPolicy::Approval => 3,
        });
        out.put_u8(u8::from(self.history_visible));
        out.put_u8(u8::from(self.muted) | (u8::from(self.dismissed) << 1));
        out.put_u64(self.member_count);
        out.put_u64(self.created_ms);
        out.put_u64(self.announcement.version);
        out.put_u64(self.announcement.at_ms);
        out.put_u64(self.announcement.by_user);
        // Callers bound every string far below u16::MAX.
        for s in [
            &self.name,
            &self.description,
            &self.avatar,
            &self.announcement.text,
        ] {
            out.put_u16(s.len() as u16);
            out.put_slice(s.as_bytes());
        }
        out
    }

    pub(crate) fn decode(id: u64, v: &[u8]) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("group");
        let mut buf = v;
        if buf.remaining() < 27 {
            return Err(corrupt());
        }
        let version = buf.get_u8();
        let fixed = match version {
            GROUP_V1 => 26,
            GROUP_V2 => 27,
            GROUP_V3 => 51,
            _ => return Err(corrupt()),
        };
        if buf.remaining() < fixed {
            return Err(corrupt());
        }
        let owner = buf.get_u64();
        let join_policy = match buf.get_u8() {
            1 => JoinPolicy::Open,
            2 => JoinPolicy::InviteOnly,
            3 => JoinPolicy::Approval,
            _ => return Err(corrupt()),
        };
        let history_visible = buf.get_u8() != 0;
        let flags = if version >= GROUP_V2 { buf.get_u8() } else { 0 };
        // V2 wrote the muted flag as 0 or 1; V3 has room for more flags.
        let muted = flags & 1 != 0;
        let dismissed = version >= GROUP_V3 && flags & 2 != 0;
        let member_count = buf.get_u64();
        let created_ms = buf.get_u64();
        if version < GROUP_V3 {
            let name = std::str::from_utf8(buf).map_err(|_| corrupt())?.to_owned();
            return Ok(Self {
                id,
                name,
                owner,
                join_policy,
                history_visible,
                member_count,
                created_ms,
                muted,
                dismissed,
                description: String::new(),
                avatar: String::new(),
                announcement: Announcement::default(),
            });
        }
        let (version, at_ms, by_user) = (buf.get_u64(), buf.get_u64(), buf.get_u64());
        let mut text = || -> Result<String> {
            if buf.remaining() < 2 {
                return Err(corrupt());
            }
            let len = usize::from(buf.get_u16());
            if buf.remaining() < len {
                return Err(corrupt());
            }
            let s = std::str::from_utf8(&buf[..len])
                .map_err(|_| corrupt())?
                .to_owned();
            buf.advance(len);
            Ok(s)
        };
        let (name, description, avatar, announcement) = (text()?, text()?, text()?, text()?);
        Ok(Self {
            id,
            name,
            owner,
            join_policy,
            history_visible,
            member_count,
            created_ms,
            muted,
            dismissed,
            description,
            avatar,
            announcement: Announcement {
                text: announcement,
                version,
                at_ms,
                by_user,
            },
        })
    }
}

impl Member {
    pub(crate) fn encode(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        let mut buf = &mut out[..];
        buf.put_u8(MEMBER_V3);
        buf.put_u8(self.role as u8);
        buf.put_u64(self.joined_seq);
        buf.put_u64(self.joined_ms);
        buf.put_u64(self.since_seq);
        buf.put_u64(self.muted_until_ms);
        out
    }

    pub(crate) fn decode(user_id: u64, v: &[u8]) -> Result<Self> {
        let mut buf = v;
        let version = match (buf.len(), buf.first()) {
            (18, Some(&MEMBER_V1)) => MEMBER_V1,
            (26, Some(&MEMBER_V2)) => MEMBER_V2,
            (34, Some(&MEMBER_V3)) => MEMBER_V3,
            _ => return Err(StorageError::Corrupt("member")),
        };
        buf.advance(1);
        let role = Role::from_u8(buf.get_u8()).ok_or(StorageError::Corrupt("member role"))?;
        Ok(Self {
            user_id,
            role,
            joined_seq: buf.get_u64(),
            joined_ms: buf.get_u64(),
            since_seq: if version >= MEMBER_V2 {
                buf.get_u64()
            } else {
                0
            },
            muted_until_ms: if version == MEMBER_V3 {
                buf.get_u64()
            } else {
                0
            },
        })
    }
}

pub(crate) fn member_key(group: u64, user: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&user.to_be_bytes());
    k
}

impl Store {
    /// A group's record.
    pub fn group(&self, id: u64) -> Result<Option<GroupInfo>> {
        self.group_shard(id)
            .groupid_group
            .get(id.to_be_bytes())?
            .map(|v| GroupInfo::decode(id, &v))
            .transpose()
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

    /// Every member of a group with the seq it receives messages from, ascending by
    /// user id (for the gateway's member cache).
    pub fn member_ids(&self, id: u64) -> Result<Vec<(u64, u64)>> {
        let tree = &self.group_shard(id).groupmember_member;
        tree.scan_prefix(id.to_be_bytes())
            .map(|entry| {
                let (k, v) = entry?;
                let user = u64::from_be_bytes(k[8..16].try_into().expect("16-byte key"));
                Ok((user, Member::decode(user, &v)?.since_seq))
            })
            .collect()
    }

    fn group_shard(&self, id: u64) -> &crate::shard::ShardDb {
        self.shard(self.inner.map.conversation(&ConversationId::Group(id)))
    }
}

/// Group names are 1 to 128 bytes, not all blank (every backend).
pub fn validate_group_name(name: &str) -> Result<()> {
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

    /// The newest group record round-trips; older ones still read, with nothing
    /// said, nothing pinned and nobody muted.
    #[test]
    fn group_records_round_trip_and_old_ones_read() {
        let info = GroupInfo {
            id: 5,
            name: "chess".into(),
            owner: 1,
            join_policy: JoinPolicy::Open,
            history_visible: false,
            member_count: 12,
            created_ms: 99,
            muted: true,
            dismissed: true,
            description: "we play".into(),
            avatar: "ab".repeat(32),
            announcement: Announcement {
                text: "at 8".into(),
                version: 3,
                at_ms: 7,
                by_user: 1,
            },
        };
        assert_eq!(GroupInfo::decode(5, &info.encode()).unwrap(), info);
        let mut v1 = vec![GROUP_V1];
        v1.put_u64(1);
        v1.put_u8(2);
        v1.put_u8(1);
        v1.put_u64(12);
        v1.put_u64(99);
        v1.put_slice(b"old");
        let old = GroupInfo::decode(5, &v1).unwrap();
        assert_eq!((old.name.as_str(), old.muted), ("old", false));
        assert!(old.description.is_empty() && old.announcement.version == 0);
        assert!(GroupInfo::decode(5, &info.encode()[..40]).is_err());
        let m = Member {
            user_id: 2,
            role: Role::Admin,
            joined_seq: 1,
            joined_ms: 2,
            since_seq: 3,
            muted_until_ms: 4,
        };
        assert_eq!(Member::decode(2, &m.encode()).unwrap(), m);
    }
    use crate::{EventsFor, GroupChange, GroupEvent, StoreConfig};

    fn an_event() -> EventsFor {
        Box::new(|_| {
            vec![GroupEvent {
                sender: 1,
                client_msg_id: crate::now_ms().to_string() + &rand::random::<u64>().to_string(),
                body: bytes::Bytes::new(),
            }]
        })
    }

    fn add(
        s: &Store,
        rt: &tokio::runtime::Runtime,
        g: u64,
        users: &[u64],
        max: u64,
    ) -> std::result::Result<crate::AddedMembers, MembershipRefusal> {
        let change = GroupChange::Add {
            users: users.to_vec(),
            role: Role::Member,
            max_members: max,
        };
        rt.block_on(s.change_group(g, change, an_event()))
            .unwrap()
            .map(|c| c.added)
    }

    fn change(
        s: &Store,
        rt: &tokio::runtime::Runtime,
        g: u64,
        change: GroupChange,
    ) -> std::result::Result<crate::GroupChanged, MembershipRefusal> {
        rt.block_on(s.change_group(g, change, an_event())).unwrap()
    }

    #[test]
    fn membership_rules() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let created = rt
            .block_on(s.create_group(1, "team", JoinPolicy::InviteOnly, false, &[], an_event()))
            .unwrap();
        let g = created.info.unwrap();
        assert_eq!(g.member_count, 1);
        assert_eq!(s.member(g.id, 1).unwrap().unwrap().role, Role::Owner);
        assert_eq!(add(&s, &rt, g.id, &[2], 3).unwrap().added, vec![2]);
        assert_eq!(
            add(&s, &rt, g.id, &[2], 3).unwrap().already_members,
            vec![2]
        );
        assert_eq!(add(&s, &rt, g.id, &[3], 3).unwrap().added, vec![3]);
        assert_eq!(add(&s, &rt, g.id, &[4], 3), Err(MembershipRefusal::Full));
        let ids: Vec<u64> = s
            .member_ids(g.id)
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(s.members(g.id, 1, 10).unwrap().len(), 2);
        assert_eq!(
            change(&s, &rt, g.id, GroupChange::Remove { user: 1 }).unwrap_err(),
            MembershipRefusal::IsOwner
        );
        change(&s, &rt, g.id, GroupChange::Transfer { new_owner: 2 }).unwrap();
        assert_eq!(s.member(g.id, 1).unwrap().unwrap().role, Role::Admin);
        assert_eq!(s.group(g.id).unwrap().unwrap().owner, 2);
        change(&s, &rt, g.id, GroupChange::Remove { user: 1 }).unwrap();
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
        let big = rt
            .block_on(s.create_group(9, "big", JoinPolicy::Open, false, &[], an_event()))
            .unwrap()
            .info
            .unwrap();
        let users: Vec<u64> = (100..20_100).chain([100, 9]).collect();
        let added = add(&s, &rt, big.id, &users, 10_000).unwrap();
        assert_eq!(added.added.len(), 9_999);
        assert_eq!(added.already_members, vec![9]);
        assert_eq!(added.over_limit.len(), 10_001);
        assert_eq!(s.group(big.id).unwrap().unwrap().member_count, 10_000);
        assert_eq!(s.member_ids(big.id).unwrap().len(), 10_000);
        assert_eq!(
            add(&s, &rt, big.id, &[1], 10_000),
            Err(MembershipRefusal::Full)
        );
        let renamed = change(
            &s,
            &rt,
            g.id,
            GroupChange::Update {
                name: Some("crew".into()),
                join_policy: Some(JoinPolicy::Open),
                history_visible: None,
            },
        )
        .unwrap()
        .info
        .unwrap();
        assert_eq!(
            (renamed.name.as_str(), renamed.join_policy),
            ("crew", JoinPolicy::Open)
        );
        s.shutdown().unwrap();
    }

    /// A change's events are stored with it, in the group's log; from the removal
    /// event on, the removed member cannot write to the group, and a later member
    /// sees its own arrival but nothing before it.
    #[test]
    fn changes_and_their_events_are_ordered_with_the_messages() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let event = |sender: u64, text: &'static str| -> EventsFor {
            Box::new(move |_| {
                vec![GroupEvent {
                    sender,
                    client_msg_id: format!("sys-{text}"),
                    body: bytes::Bytes::from_static(text.as_bytes()),
                }]
            })
        };
        let created = rt
            .block_on(s.create_group(
                1,
                "team",
                JoinPolicy::Open,
                false,
                &[2],
                event(1, "created"),
            ))
            .unwrap();
        assert_eq!(created.events.len(), 1);
        assert_eq!(created.events[0].seq, 1);
        let g = created.info.unwrap().id;
        let c = ConversationId::Group(g);
        let send = |user: u64, id: &str| {
            rt.block_on(s.append(crate::AppendRequest {
                conversation: c,
                sender: user,
                sender_device: "d".into(),
                client_msg_id: id.into(),
                body: bytes::Bytes::from_static(b"hi"),
                reply_to_seq: 0,
                recalls: 0,
                mentions: Vec::new(),
                edits: None,
            }))
        };
        assert_eq!(send(2, "m1").unwrap().seq, 2);
        let removed = rt
            .block_on(s.change_group(g, GroupChange::Remove { user: 2 }, event(1, "removed")))
            .unwrap()
            .unwrap();
        assert_eq!(removed.events[0].seq, 3);
        assert!(matches!(send(2, "m2"), Err(StorageError::NotParticipant)));
        assert!(matches!(send(7, "m3"), Err(StorageError::NotParticipant)));
        let added = rt
            .block_on(s.change_group(
                g,
                GroupChange::Add {
                    users: vec![7],
                    role: Role::Member,
                    max_members: 10,
                },
                event(1, "added"),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(added.events[0].seq, 4);
        let member = s.member(g, 7).unwrap().unwrap();
        assert_eq!((member.joined_seq, member.since_seq), (3, 4));
        assert_eq!(s.conversation_state(7, &c).unwrap().unwrap().since_seq, 4);
        assert_eq!(send(7, "m4").unwrap().seq, 5);
        let log = s
            .history(&c, crate::HistoryRange::Latest, 10)
            .unwrap()
            .messages;
        let bodies: Vec<&[u8]> = log.iter().map(|m| m.body.as_ref()).collect();
        assert_eq!(
            bodies,
            [&b"created"[..], b"hi", b"removed", b"added", b"hi"]
        );
        s.shutdown().unwrap();
    }
}
