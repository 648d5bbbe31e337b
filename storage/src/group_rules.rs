//! The rules of a group's membership, the same whatever backend stores it: who may
//! be added (once, within the size cap), who may be removed (never the owner), how
//! roles and ownership change, and from which seq a new member sees the log and
//! receives messages. A backend reads the group and the members a change names,
//! asks [`decide`], and writes what it decided atomically, in order with the
//! group's messages.

use std::collections::HashSet;

use crate::error::Result;
use crate::group_changes::{GroupChange, GroupChanged};
use crate::{Ban, GroupInfo, Member, MembershipChange, MembershipRefusal, Role};

/// How a backend reads what a change needs of the group's members: a member's
/// record, and whether a user is banned.
pub trait MemberReader {
    /// `user`'s membership, if any.
    fn member(&self, user: u64) -> Result<Option<Member>>;
    /// Whether `user` is banned from the group.
    fn banned(&self, user: u64) -> Result<bool>;
}

/// A change to decide: a new group (its record, the members it starts with, the
/// owner first), or a change to an existing one.
pub enum Proposal {
    /// A new group: its record and first members, the owner first.
    Create(GroupInfo, Vec<u64>),
    /// A change to an existing group.
    Change(GroupChange),
}

/// What a change does, for the backend to write.
pub struct Decision {
    /// The group's record after the change.
    pub info: GroupInfo,
    /// New members: their records, and entries in their conversation lists.
    pub joined: Vec<Member>,
    /// Member records whose role changed.
    pub updated: Vec<Member>,
    /// Members to remove.
    pub removed: Vec<u64>,
    /// Bans to record (`Some`) or lift (`None`).
    pub bans: Vec<(u64, Option<Ban>)>,
    /// Who joined and who left, for the fan-out (none for roles and settings).
    pub membership: Option<MembershipChange>,
    /// The answer to the caller (its events filled in once stored).
    pub changed: GroupChanged,
    /// The change changes nothing (everyone it adds is a member already): nothing
    /// to store, no event.
    pub noop: bool,
}

/// Decides `proposal` for group `id`, given its record (if any) and a way to read
/// members and bans. `next_seq` is the seq the change's first event takes in the group's log
/// (it names the memberships the change makes); `now` the time of the change.
pub fn decide(
    id: u64,
    existing: Option<GroupInfo>,
    read: &impl MemberReader,
    proposal: Proposal,
    next_seq: u64,
    now: u64,
) -> Result<std::result::Result<Decision, MembershipRefusal>> {
    let mut changed = GroupChanged::default();
    let mut joined = Vec::new();
    let mut updated = Vec::new();
    let mut removed = Vec::new();
    let mut bans = Vec::new();
    let member = |user: u64| read.member(user);
    let mut membership = None;
    let mut noop = false;
    let new_member = |user: u64, role: Role, joined_seq: u64| Member {
        user_id: user,
        role,
        joined_seq,
        joined_ms: now,
        since_seq: next_seq,
        muted_until_ms: 0,
    };
    let info = match proposal {
        Proposal::Create(mut info, users) => {
            info.created_ms = now;
            info.member_count = users.len() as u64;
            for (i, &user) in users.iter().enumerate() {
                let role = if i == 0 { Role::Owner } else { Role::Member };
                joined.push(new_member(user, role, 0));
            }
            changed.added.added = users.clone();
            membership = Some(MembershipChange {
                group: id,
                added: users,
                removed: Vec::new(),
            });
            info
        }
        Proposal::Change(change) => {
            let Some(mut info) = existing.filter(|g| !g.dismissed) else {
                return Ok(Err(MembershipRefusal::NoGroup));
            };
            match change {
                GroupChange::Add {
                    users,
                    role,
                    max_members,
                } => {
                    let out = &mut changed.added;
                    let mut seen = HashSet::new();
                    for user in users {
                        if !seen.insert(user) {
                            continue;
                        }
                        if member(user)?.is_some() {
                            out.already_members.push(user);
                        } else if read.banned(user)? {
                            out.banned.push(user);
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
                        if !out.banned.is_empty() && out.already_members.is_empty() {
                            return Ok(Err(MembershipRefusal::Banned));
                        }
                        noop = true;
                    }
                    // New members see their own arrival, and what came before only
                    // if the group's history is visible to them.
                    let joined_seq = if info.history_visible {
                        0
                    } else {
                        next_seq - 1
                    };
                    joined.extend(out.added.iter().map(|&u| new_member(u, role, joined_seq)));
                    info.member_count += out.added.len() as u64;
                    if !out.added.is_empty() {
                        membership = Some(MembershipChange {
                            group: id,
                            added: out.added.clone(),
                            removed: Vec::new(),
                        });
                    }
                }
                GroupChange::Remove { user } => {
                    if member(user)?.is_none() {
                        return Ok(Err(MembershipRefusal::NotMember));
                    }
                    if info.owner == user {
                        return Ok(Err(MembershipRefusal::IsOwner));
                    }
                    membership = Some(take_out(id, user, &mut info, &mut removed, &mut changed));
                }
                GroupChange::SetRole { user, role } => {
                    let Some(mut m) = member(user)? else {
                        return Ok(Err(MembershipRefusal::NotMember));
                    };
                    if info.owner == user || role == Role::Owner {
                        return Ok(Err(MembershipRefusal::IsOwner));
                    }
                    m.role = role;
                    updated.push(m);
                    changed.member = Some(m);
                }
                GroupChange::Transfer { new_owner } => {
                    let Some(mut m) = member(new_owner)? else {
                        return Ok(Err(MembershipRefusal::NotMember));
                    };
                    if let Some(mut old) = member(info.owner)? {
                        old.role = Role::Admin;
                        updated.push(old);
                    }
                    m.role = Role::Owner;
                    updated.push(m);
                    info.owner = new_owner;
                    changed.member = Some(m);
                }
                GroupChange::Update {
                    name,
                    join_policy,
                    history_visible,
                } => {
                    if let Some(name) = name {
                        info.name = name;
                    }
                    if let Some(p) = join_policy {
                        info.join_policy = p;
                    }
                    if let Some(h) = history_visible {
                        info.history_visible = h;
                    }
                }
                GroupChange::SetProfile {
                    description,
                    avatar,
                    announcement,
                    by,
                } => {
                    if let Some(d) = description {
                        info.description = d;
                    }
                    if let Some(a) = avatar {
                        info.avatar = a;
                    }
                    if let Some(text) = announcement {
                        info.announcement = crate::Announcement {
                            text,
                            version: info.announcement.version + 1,
                            at_ms: now,
                            by_user: by,
                        };
                    }
                }
                GroupChange::Dismiss => {
                    info.dismissed = true;
                    // Nobody may send from here on: what the writer knows goes.
                    membership = Some(MembershipChange {
                        group: id,
                        added: Vec::new(),
                        removed: Vec::new(),
                    });
                }
                GroupChange::MuteAll { muted } => {
                    info.muted = muted;
                    // Senders' rights changed: what the writer knows of them goes.
                    membership = Some(MembershipChange {
                        group: id,
                        added: Vec::new(),
                        removed: Vec::new(),
                    });
                }
                GroupChange::Ban { user, banned, by } => {
                    if info.owner == user {
                        return Ok(Err(MembershipRefusal::IsOwner));
                    }
                    let is_member = member(user)?.is_some();
                    let was_banned = read.banned(user)?;
                    if banned {
                        if is_member {
                            membership =
                                Some(take_out(id, user, &mut info, &mut removed, &mut changed));
                        }
                        if was_banned && !is_member {
                            noop = true;
                        } else {
                            bans.push((
                                user,
                                Some(Ban {
                                    user_id: user,
                                    by_user: by,
                                    at_ms: now,
                                }),
                            ));
                        }
                    } else if was_banned {
                        bans.push((user, None));
                    } else {
                        noop = true;
                    }
                }
                GroupChange::MuteMember { user, until_ms } => {
                    let Some(mut m) = member(user)? else {
                        return Ok(Err(MembershipRefusal::NotMember));
                    };
                    if info.owner == user {
                        return Ok(Err(MembershipRefusal::IsOwner));
                    }
                    m.muted_until_ms = until_ms;
                    updated.push(m);
                    changed.member = Some(m);
                    membership = Some(MembershipChange {
                        group: id,
                        added: Vec::new(),
                        removed: Vec::new(),
                    });
                }
            }
            info
        }
    };
    changed.info = Some(info.clone());
    Ok(Ok(Decision {
        info,
        joined,
        updated,
        removed,
        bans,
        membership,
        changed,
        noop,
    }))
}

/// Takes member `user` out of group `id`: one member fewer, its removal for the
/// backend to write and the caller to hear; returns the membership change to fan
/// out.
fn take_out(
    id: u64,
    user: u64,
    info: &mut GroupInfo,
    removed: &mut Vec<u64>,
    changed: &mut GroupChanged,
) -> MembershipChange {
    info.member_count = info.member_count.saturating_sub(1);
    removed.push(user);
    changed.removed.push(user);
    MembershipChange {
        group: id,
        added: Vec::new(),
        removed: vec![user],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JoinPolicy;
    use std::collections::HashMap;

    fn group(owner: u64, count: u64, history_visible: bool) -> GroupInfo {
        GroupInfo {
            id: 7,
            name: "g".into(),
            owner,
            join_policy: JoinPolicy::InviteOnly,
            history_visible,
            member_count: count,
            created_ms: 1,
            muted: false,
            dismissed: false,
            description: String::new(),
            avatar: String::new(),
            announcement: Default::default(),
        }
    }

    fn members(ids: &[u64]) -> HashMap<u64, Member> {
        ids.iter()
            .map(|&u| {
                let role = if u == 1 { Role::Owner } else { Role::Member };
                (
                    u,
                    Member {
                        user_id: u,
                        role,
                        joined_seq: 0,
                        joined_ms: 1,
                        since_seq: 1,
                        muted_until_ms: 0,
                    },
                )
            })
            .collect()
    }

    struct Read<'a>(&'a HashMap<u64, Member>, &'a [u64]);

    impl MemberReader for Read<'_> {
        fn member(&self, user: u64) -> Result<Option<Member>> {
            Ok(self.0.get(&user).copied())
        }
        fn banned(&self, user: u64) -> Result<bool> {
            Ok(self.1.contains(&user))
        }
    }

    fn run_with_bans(
        info: GroupInfo,
        m: &HashMap<u64, Member>,
        banned: &[u64],
        change: GroupChange,
        next_seq: u64,
    ) -> std::result::Result<Decision, MembershipRefusal> {
        decide(
            7,
            Some(info),
            &Read(m, banned),
            Proposal::Change(change),
            next_seq,
            50,
        )
        .unwrap()
    }

    fn run(
        info: GroupInfo,
        m: &HashMap<u64, Member>,
        change: GroupChange,
        next_seq: u64,
    ) -> std::result::Result<Decision, MembershipRefusal> {
        run_with_bans(info, m, &[], change, next_seq)
    }

    #[test]
    fn a_ban_removes_the_member_and_keeps_it_out() {
        let m = members(&[1, 2, 3]);
        let g = || group(1, 3, false);
        let ban = |user, banned| GroupChange::Ban {
            user,
            banned,
            by: 1,
        };
        let d = run(g(), &m, ban(2, true), 9).unwrap();
        assert_eq!((d.removed.clone(), d.info.member_count), (vec![2], 2));
        assert_eq!(d.membership.map(|c| c.removed), Some(vec![2]));
        assert_eq!(
            d.bans,
            vec![(
                2,
                Some(Ban {
                    user_id: 2,
                    by_user: 1,
                    at_ms: 50
                })
            )]
        );
        // A stranger may be banned before it ever joins; banned twice is nothing.
        let d = run(g(), &m, ban(8, true), 9).unwrap();
        assert!(d.removed.is_empty() && d.membership.is_none() && !d.noop);
        assert!(run_with_bans(g(), &m, &[8], ban(8, true), 9).unwrap().noop);
        assert_eq!(
            run(g(), &m, ban(1, true), 9).err(),
            Some(MembershipRefusal::IsOwner)
        );
        // Lifting: only a standing ban.
        assert_eq!(
            run_with_bans(g(), &m, &[8], ban(8, false), 9).unwrap().bans,
            vec![(8, None)]
        );
        assert!(run(g(), &m, ban(8, false), 9).unwrap().noop);
        // The banned are left out of additions; all banned is a refusal.
        let add = |users: Vec<u64>| GroupChange::Add {
            users,
            role: Role::Member,
            max_members: 10,
        };
        let d = run_with_bans(g(), &m, &[8], add(vec![8, 9]), 9).unwrap();
        assert_eq!(
            (
                d.changed.added.added.clone(),
                d.changed.added.banned.clone()
            ),
            (vec![9], vec![8])
        );
        assert_eq!(
            run_with_bans(g(), &m, &[8], add(vec![8]), 9).err(),
            Some(MembershipRefusal::Banned)
        );
    }

    #[test]
    fn additions_respect_the_cap_and_name_the_membership_by_the_event() {
        let m = members(&[1, 2]);
        let add = |users: Vec<u64>| GroupChange::Add {
            users,
            role: Role::Member,
            max_members: 4,
        };
        let d = run(group(1, 2, false), &m, add(vec![2, 3, 3, 4, 5]), 10).unwrap();
        assert_eq!(d.changed.added.added, vec![3, 4]);
        assert_eq!(d.changed.added.already_members, vec![2]);
        assert_eq!(d.changed.added.over_limit, vec![5]);
        assert_eq!(d.info.member_count, 4);
        assert!(d
            .joined
            .iter()
            .all(|p| p.since_seq == 10 && p.joined_seq == 9));
        // History visible: new members see it all.
        let d = run(group(1, 2, true), &m, add(vec![3]), 10).unwrap();
        assert_eq!(d.joined[0].joined_seq, 0);
        // Only members already: nothing to do; a full group refuses.
        assert!(run(group(1, 2, false), &m, add(vec![2]), 10).unwrap().noop);
        assert_eq!(
            run(group(1, 4, false), &m, add(vec![9]), 10).err(),
            Some(MembershipRefusal::Full)
        );
    }

    #[test]
    fn the_owner_stays_until_it_hands_over() {
        let m = members(&[1, 2]);
        let g = || group(1, 2, false);
        assert_eq!(
            run(g(), &m, GroupChange::Remove { user: 1 }, 5).err(),
            Some(MembershipRefusal::IsOwner)
        );
        assert_eq!(
            run(g(), &m, GroupChange::Remove { user: 3 }, 5).err(),
            Some(MembershipRefusal::NotMember)
        );
        let d = run(g(), &m, GroupChange::Transfer { new_owner: 2 }, 5).unwrap();
        assert_eq!(d.info.owner, 2);
        let roles: Vec<(u64, Role)> = d.updated.iter().map(|p| (p.user_id, p.role)).collect();
        assert_eq!(roles, vec![(1, Role::Admin), (2, Role::Owner)]);
        let d = run(g(), &m, GroupChange::Remove { user: 2 }, 5).unwrap();
        assert_eq!((d.removed.clone(), d.info.member_count), (vec![2], 1));
        assert_eq!(d.membership.map(|c| c.removed), Some(vec![2]));
    }
}
