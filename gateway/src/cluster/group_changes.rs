//! Group changes made by the node that owns the group's conversation.
//!
//! A group's member list decides who receives its messages, and each node routes
//! by its own cached copy. The owner stores and fans out all of the group's
//! messages ([`super::forward`]); when it also stores every change to the group,
//! its commit listener hears messages and changes in log order, exactly as on one
//! node: a message stored after a removal is never routed to the removed member,
//! and a member event never overtakes the messages before it. A change arriving
//! elsewhere is checked there (the actor's role), then sent to the owner as a NATS
//! request (`<p>.g.<owner>`); the owner's store applies the membership rules again
//! under the conversation's lock and the owner answers with what the change did.
//! When nobody serves the owner's subject (it died; its lease has not run out yet),
//! the change is made here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{RequestErrorKind, Subscriber};
use courier_protocol::cluster::{
    group_change_forward::Change, AddMembers, BanMember, GroupChangeForward, GroupChangeResult,
    GroupRecord, MemberRecord, MuteMember, SetGroupProfile, SetMemberRole, StoredEvent,
    UpdateGroup,
};
use courier_protocol::pb::{self, system_event::Event};
use courier_storage::{
    Appended, GroupChange, GroupChanged, GroupInfo, JoinPolicy, Member, Role, Storage,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::forward::{next_request, refusal_of, refused, unavailable};
use super::Cluster;
use crate::api::groups::announced;
use crate::error::ApiError;

impl Cluster {
    /// Has `owner` make `change` to `group` (announced by `announce`, made by
    /// `actor`) and answers what it did; made here when no node serves the owner's
    /// subject any more.
    pub async fn forward_group_change(
        &self,
        owner: &str,
        group: u64,
        change: GroupChange,
        announce: Option<Event>,
        actor: u64,
    ) -> Result<GroupChanged, ApiError> {
        let forward = GroupChangeForward {
            group,
            actor,
            change: Some(change_to_pb(&change)),
            announce: announce
                .clone()
                .map(|event| {
                    pb::SystemEvent { event: Some(event) }
                        .encode_to_vec()
                        .into()
                })
                .unwrap_or_default(),
        };
        let request = async_nats::Request::new()
            .payload(forward.encode_to_vec().into())
            .timeout(Some(Duration::from_millis(self.config.forward_timeout_ms)));
        self.counters
            .group_changes_forwarded
            .fetch_add(1, Ordering::Relaxed);
        match self
            .client
            .send_request(self.subjects.group_change(owner), request)
            .await
        {
            Ok(answer) => match GroupChangeResult::decode(answer.payload) {
                Ok(result) => changed_from_pb(result),
                Err(_) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    Err(ApiError::internal("a malformed answer to a group change"))
                }
            },
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                let store = self
                    .store
                    .get()
                    .ok_or_else(|| unavailable("the store is not open yet"))?;
                Ok(store
                    .change_group(group, change, announced(actor, announce))
                    .await??)
            }
            Err(_) => {
                self.counters
                    .forward_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                Err(unavailable(
                    "the node that stores this group did not answer; retry",
                ))
            }
        }
    }
}

/// Makes the group changes other nodes forward to this one, one at a time in the
/// order they came, answering each with what it did.
pub(super) async fn serve(
    cluster: Arc<Cluster>,
    mut requests: Subscriber,
    store: Arc<dyn Storage>,
    shutdown: CancellationToken,
) {
    while let Some((reply, payload)) = next_request(&cluster, &mut requests, &shutdown).await {
        let result = match change_from_pb(payload) {
            Some((group, change, announce, actor)) => {
                cluster
                    .counters
                    .group_changes_served
                    .fetch_add(1, Ordering::Relaxed);
                match store
                    .change_group(group, change, announced(actor, announce))
                    .await
                {
                    Ok(Ok(changed)) => changed_to_pb(changed),
                    Ok(Err(refusal)) => error_result(refusal.into()),
                    Err(e) => error_result(e.into()),
                }
            }
            None => {
                cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
                error_result(ApiError::invalid("malformed forwarded group change"))
            }
        };
        let _ = cluster
            .client
            .publish(reply, result.encode_to_vec().into())
            .await;
    }
}

fn role_from(v: i32) -> Option<Role> {
    match v {
        1 => Some(Role::Member),
        2 => Some(Role::Admin),
        3 => Some(Role::Owner),
        _ => None,
    }
}

fn policy_code(p: JoinPolicy) -> i32 {
    match p {
        JoinPolicy::Open => 0,
        JoinPolicy::InviteOnly => 1,
        JoinPolicy::Approval => 2,
    }
}

fn policy_from(v: i32) -> Option<JoinPolicy> {
    match v {
        0 => Some(JoinPolicy::Open),
        1 => Some(JoinPolicy::InviteOnly),
        2 => Some(JoinPolicy::Approval),
        _ => None,
    }
}

fn change_to_pb(change: &GroupChange) -> Change {
    match change {
        GroupChange::Add {
            users,
            role,
            max_members,
        } => Change::Add(AddMembers {
            users: users.clone(),
            role: *role as i32,
            max_members: *max_members,
        }),
        GroupChange::Remove { user } => Change::Remove(*user),
        GroupChange::SetRole { user, role } => Change::SetRole(SetMemberRole {
            user: *user,
            role: *role as i32,
        }),
        GroupChange::Transfer { new_owner } => Change::Transfer(*new_owner),
        GroupChange::Update {
            name,
            join_policy,
            history_visible,
        } => Change::Update(UpdateGroup {
            name: name.clone(),
            join_policy: join_policy.map(policy_code),
            history_visible: *history_visible,
        }),
        GroupChange::MuteAll { muted } => Change::MuteAll(*muted),
        GroupChange::Dismiss => Change::Dismiss(true),
        GroupChange::SetProfile {
            description,
            avatar,
            announcement,
            by,
        } => Change::SetProfile(SetGroupProfile {
            description: description.clone(),
            avatar: avatar.clone(),
            announcement: announcement.clone(),
            by: *by,
        }),
        GroupChange::MuteMember { user, until_ms } => Change::MuteMember(MuteMember {
            user: *user,
            until_ms: *until_ms,
        }),
        GroupChange::Ban { user, banned, by } => Change::Ban(BanMember {
            user: *user,
            banned: *banned,
            by: *by,
        }),
    }
}

/// A forwarded change as (group, change, announcement, actor); `None` when any part
/// of it does not decode.
fn change_from_pb(payload: bytes::Bytes) -> Option<(u64, GroupChange, Option<Event>, u64)> {
    let f = GroupChangeForward::decode(payload).ok()?;
    let change = match f.change? {
        Change::Add(a) => GroupChange::Add {
            users: a.users,
            role: role_from(a.role)?,
            max_members: a.max_members,
        },
        Change::Remove(user) => GroupChange::Remove { user },
        Change::SetRole(s) => GroupChange::SetRole {
            user: s.user,
            role: role_from(s.role)?,
        },
        Change::Transfer(new_owner) => GroupChange::Transfer { new_owner },
        Change::Update(u) => GroupChange::Update {
            name: u.name,
            join_policy: match u.join_policy {
                Some(p) => Some(policy_from(p)?),
                None => None,
            },
            history_visible: u.history_visible,
        },
        Change::MuteAll(muted) => GroupChange::MuteAll { muted },
        Change::Dismiss(_) => GroupChange::Dismiss,
        Change::SetProfile(p) => GroupChange::SetProfile {
            description: p.description,
            avatar: p.avatar,
            announcement: p.announcement,
            by: p.by,
        },
        Change::MuteMember(m) => GroupChange::MuteMember {
            user: m.user,
            until_ms: m.until_ms,
        },
        Change::Ban(b) => GroupChange::Ban {
            user: b.user,
            banned: b.banned,
            by: b.by,
        },
    };
    let announce = match f.announce.is_empty() {
        true => None,
        false => Some(pb::SystemEvent::decode(f.announce).ok()?.event?),
    };
    Some((f.group, change, announce, f.actor))
}

fn changed_to_pb(c: GroupChanged) -> GroupChangeResult {
    GroupChangeResult {
        info: c.info.map(|i| GroupRecord {
            id: i.id,
            name: i.name,
            owner: i.owner,
            join_policy: policy_code(i.join_policy),
            history_visible: i.history_visible,
            member_count: i.member_count,
            created_ms: i.created_ms,
            muted: i.muted,
            dismissed: i.dismissed,
            description: i.description,
            avatar: i.avatar,
            announcement: i.announcement.text,
            announcement_version: i.announcement.version,
            announcement_at_ms: i.announcement.at_ms,
            announcement_by: i.announcement.by_user,
        }),
        added: c.added.added,
        already_members: c.added.already_members,
        over_limit: c.added.over_limit,
        banned: c.added.banned,
        removed: c.removed,
        member: c.member.map(|m| MemberRecord {
            user_id: m.user_id,
            role: m.role as i32,
            joined_seq: m.joined_seq,
            joined_ms: m.joined_ms,
            since_seq: m.since_seq,
            muted_until_ms: m.muted_until_ms,
        }),
        events: c
            .events
            .into_iter()
            .map(|a| StoredEvent {
                seq: a.seq,
                server_time_ms: a.server_time_ms,
                duplicate: a.duplicate,
            })
            .collect(),
        ..Default::default()
    }
}

fn changed_from_pb(r: GroupChangeResult) -> Result<GroupChanged, ApiError> {
    if r.error_code != 0 {
        return Err(refused(r.error_code, r.error_message, r.retry_after_ms));
    }
    let malformed = || ApiError::internal("a malformed answer to a group change");
    let info = match r.info {
        Some(i) => Some(GroupInfo {
            id: i.id,
            name: i.name,
            owner: i.owner,
            join_policy: policy_from(i.join_policy).ok_or_else(malformed)?,
            history_visible: i.history_visible,
            member_count: i.member_count,
            created_ms: i.created_ms,
            muted: i.muted,
            dismissed: i.dismissed,
            description: i.description,
            avatar: i.avatar,
            announcement: courier_storage::Announcement {
                text: i.announcement,
                version: i.announcement_version,
                at_ms: i.announcement_at_ms,
                by_user: i.announcement_by,
            },
        }),
        None => None,
    };
    let member = match r.member {
        Some(m) => Some(Member {
            user_id: m.user_id,
            role: role_from(m.role).ok_or_else(malformed)?,
            joined_seq: m.joined_seq,
            joined_ms: m.joined_ms,
            since_seq: m.since_seq,
            muted_until_ms: m.muted_until_ms,
        }),
        None => None,
    };
    Ok(GroupChanged {
        info,
        added: courier_storage::AddedMembers {
            added: r.added,
            already_members: r.already_members,
            over_limit: r.over_limit,
            banned: r.banned,
        },
        removed: r.removed,
        member,
        events: r
            .events
            .into_iter()
            .map(|e| Appended {
                seq: e.seq,
                server_time_ms: e.server_time_ms,
                duplicate: e.duplicate,
            })
            .collect(),
    })
}

fn error_result(e: ApiError) -> GroupChangeResult {
    let (error_code, error_message, retry_after_ms) = refusal_of(e);
    GroupChangeResult {
        error_code,
        error_message,
        retry_after_ms,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(change: GroupChange, announce: Option<Event>) {
        let forward = GroupChangeForward {
            group: 9,
            actor: 4,
            change: Some(change_to_pb(&change)),
            announce: announce
                .clone()
                .map(|e| pb::SystemEvent { event: Some(e) }.encode_to_vec().into())
                .unwrap_or_default(),
        };
        let (group, back, event, actor) =
            change_from_pb(forward.encode_to_vec().into()).expect("decodes");
        assert_eq!((group, actor), (9, 4));
        assert_eq!(format!("{back:?}"), format!("{change:?}"));
        assert_eq!(event, announce);
    }

    #[test]
    fn every_change_survives_the_wire() {
        round_trip(
            GroupChange::Add {
                users: vec![1, 2, 3],
                role: Role::Member,
                max_members: 500,
            },
            Some(Event::MembersAdded(pb::MembersAdded {
                user_ids: vec![],
                by_user: 4,
            })),
        );
        round_trip(
            GroupChange::Remove { user: 3 },
            Some(Event::MemberLeft(pb::MemberLeft {
                user_id: 3,
                by_user: 4,
                removed: true,
            })),
        );
        round_trip(
            GroupChange::SetRole {
                user: 2,
                role: Role::Admin,
            },
            None,
        );
        round_trip(GroupChange::Transfer { new_owner: 2 }, None);
        round_trip(GroupChange::MuteAll { muted: true }, None);
        round_trip(GroupChange::Dismiss, None);
        round_trip(
            GroupChange::SetProfile {
                description: Some("about".into()),
                avatar: None,
                announcement: Some(String::new()),
                by: 2,
            },
            None,
        );
        round_trip(
            GroupChange::MuteMember {
                user: 3,
                until_ms: 99,
            },
            None,
        );
        round_trip(
            GroupChange::Ban {
                user: 3,
                banned: true,
                by: 4,
            },
            Some(Event::MemberBanned(pb::MemberBanned {
                user_id: 3,
                banned: true,
                by_user: 4,
            })),
        );
        round_trip(
            GroupChange::Update {
                name: None,
                join_policy: Some(JoinPolicy::Approval),
                history_visible: None,
            },
            None,
        );
        round_trip(
            GroupChange::Update {
                name: Some("renamed".into()),
                join_policy: Some(JoinPolicy::InviteOnly),
                history_visible: None,
            },
            None,
        );
        round_trip(
            GroupChange::Update {
                name: None,
                join_policy: None,
                history_visible: Some(false),
            },
            None,
        );
    }

    #[test]
    fn what_a_change_did_survives_the_wire() {
        let changed = GroupChanged {
            info: Some(GroupInfo {
                id: 9,
                name: "g".into(),
                owner: 4,
                join_policy: JoinPolicy::Open,
                history_visible: true,
                member_count: 3,
                created_ms: 17,
                muted: true,
                dismissed: false,
                description: "about".into(),
                avatar: "ab".repeat(32),
                announcement: courier_storage::Announcement {
                    text: "welcome".into(),
                    version: 2,
                    at_ms: 5,
                    by_user: 4,
                },
            }),
            added: courier_storage::AddedMembers {
                added: vec![1],
                already_members: vec![2],
                over_limit: vec![3],
                banned: vec![6],
            },
            removed: vec![5],
            member: Some(Member {
                user_id: 1,
                role: Role::Admin,
                joined_seq: 2,
                joined_ms: 3,
                since_seq: 4,
                muted_until_ms: 5,
            }),
            events: vec![Appended {
                seq: 7,
                server_time_ms: 8,
                duplicate: false,
            }],
        };
        let back = changed_from_pb(changed_to_pb(changed.clone())).unwrap();
        assert_eq!(format!("{back:?}"), format!("{changed:?}"));
    }

    #[test]
    fn refusals_and_garbage_are_errors() {
        let e = changed_from_pb(error_result(ApiError::new(
            courier_protocol::ErrorCode::GroupFull,
            "full",
        )))
        .unwrap_err();
        assert_eq!(e.code, courier_protocol::ErrorCode::GroupFull);
        assert!(change_from_pb(bytes::Bytes::from_static(b"\xff\xff")).is_none());
        let no_change = GroupChangeForward {
            group: 1,
            ..Default::default()
        };
        assert!(change_from_pb(no_change.encode_to_vec().into()).is_none());
        let bad_role = GroupChangeForward {
            group: 1,
            change: Some(Change::SetRole(SetMemberRole { user: 1, role: 9 })),
            ..Default::default()
        };
        assert!(change_from_pb(bad_role.encode_to_vec().into()).is_none());
    }
}
