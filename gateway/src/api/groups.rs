//! Groups: creation, membership and roles, with the rules an IM user expects:
//! the creator owns the group; owners and admins add and remove people and rename;
//! only the owner changes roles and hands ownership over, and must do so before
//! leaving; anyone may join an open group by id. Every change is stored with the
//! system event that announces it, in one commit of the group's log (see
//! `courier_storage::GroupChange`), so members learn of it through sync and a crash
//! never keeps one without the other.

use courier_protocol::pb::{self, message_body::Content, system_event::Event};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{
    EventsFor, GroupChange, GroupChanged, GroupEvent, GroupInfo, JoinPolicy, MembershipRefusal,
    Role, MAX_ADDED_PER_CHANGE,
};
use prost::Message as _;

use crate::api::dto::{AddedMembers, GroupView, InvitationView, MemberList, MemberView};
use crate::api::hygiene::check_name;
use crate::api::limits::Limit;
use crate::api::Api;
use crate::config::GroupAddPolicy;
use crate::error::ApiError;

/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;

/// Who of the users someone wants in a group joins now, is invited, or is refused.
#[derive(Debug, Default)]
struct Consent {
    join_now: Vec<u64>,
    invite: Vec<u64>,
    refused: Vec<u64>,
}

/// Largest page of a member list.
pub const MAX_MEMBER_PAGE: usize = 500;

/// The store's event builder for a change made by `actor`: each event becomes a
/// system message from `actor`.
fn system_events(
    actor: u64,
    events: impl FnOnce(&GroupChanged) -> Vec<Event> + Send + 'static,
) -> EventsFor {
    Box::new(move |changed| {
        events(changed)
            .into_iter()
            .map(|event| GroupEvent {
                sender: actor,
                client_msg_id: crate::api::system_msg_id(),
                body: pb::MessageBody {
                    content: Some(Content::System(pb::SystemEvent { event: Some(event) })),
                }
                .encode_to_vec()
                .into(),
            })
            .collect()
    })
}

/// The events that announce a change, from the one the caller asked for: a
/// `MembersAdded` names the users actually added; a `MembersAdded` or `MemberJoined`
/// that added nobody is not stored.
pub(crate) fn announcements(announce: Option<Event>, changed: &GroupChanged) -> Vec<Event> {
    let added = &changed.added.added;
    match announce {
        Some(Event::MembersAdded(_) | Event::MemberJoined(_)) if added.is_empty() => Vec::new(),
        Some(Event::MembersAdded(e)) => vec![Event::MembersAdded(pb::MembersAdded {
            user_ids: added.clone(),
            by_user: e.by_user,
        })],
        // The announcement's version is the store's to give.
        Some(Event::AnnouncementChanged(e)) => {
            vec![Event::AnnouncementChanged(pb::AnnouncementChanged {
                version: changed.info.as_ref().map_or(0, |i| i.announcement.version),
                ..e
            })]
        }
        other => other.into_iter().collect(),
    }
}

/// The store's event builder for a change by `actor` announced by `announce`.
pub(crate) fn announced(actor: u64, announce: Option<Event>) -> EventsFor {
    system_events(actor, move |changed| announcements(announce, changed))
}

impl From<MembershipRefusal> for ApiError {
    fn from(r: MembershipRefusal) -> Self {
        match r {
            MembershipRefusal::NoGroup => ApiError::new(ErrorCode::NotFound, "no such group"),
            MembershipRefusal::AlreadyMember => {
                ApiError::new(ErrorCode::AlreadyExists, "already a member")
            }
            MembershipRefusal::NotMember => {
                ApiError::new(ErrorCode::NotFound, "not a member of this group")
            }
            MembershipRefusal::Full => ApiError::new(ErrorCode::GroupFull, "the group is full"),
            MembershipRefusal::IsOwner => ApiError::forbidden(
                "the owner cannot leave or be removed; transfer ownership first",
            ),
            MembershipRefusal::Banned => {
                ApiError::new(ErrorCode::BannedFromGroup, "banned from this group")
            }
        }
    }
}

/// Until when `m` is muted, if it is now.
pub(crate) fn muted_until(m: &courier_storage::Member) -> Option<u64> {
    (m.muted_until_ms > courier_storage::now_ms()).then_some(m.muted_until_ms)
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

/// How a join policy is named in the API.
pub(crate) fn policy_name(p: JoinPolicy) -> &'static str {
    match p {
        JoinPolicy::Open => "open",
        JoinPolicy::InviteOnly => "invite",
        JoinPolicy::Approval => "approval",
    }
}

/// Parses `open` / `invite` / `approval`.
pub fn parse_policy(s: &str) -> Result<JoinPolicy, ApiError> {
    match s {
        "open" => Ok(JoinPolicy::Open),
        "invite" | "invite_only" => Ok(JoinPolicy::InviteOnly),
        "approval" => Ok(JoinPolicy::Approval),
        _ => Err(ApiError::invalid(
            "join_policy is `open`, `invite` or `approval`",
        )),
    }
}

impl Api {
    /// The caller's role in `group`, or FORBIDDEN/NOT_FOUND when it has none.
    pub(crate) async fn role_in(
        &self,
        group: u64,
        user: u64,
    ) -> Result<(GroupInfo, Role), ApiError> {
        let info = self
            .store
            .group(group)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        let member = self
            .store
            .member(group, user)
            .await?
            .ok_or_else(|| ApiError::forbidden("not a member of this group"))?;
        Ok((info, member.role))
    }

    fn group_view(&self, info: &GroupInfo, my_role: Option<Role>) -> GroupView {
        GroupView {
            group_id: info.id,
            conversation: ConversationId::Group(info.id).to_string(),
            name: info.name.clone(),
            owner: info.owner,
            join_policy: policy_name(info.join_policy).into(),
            history_visible: info.history_visible,
            member_count: info.member_count,
            created_ms: info.created_ms,
            muted: info.muted,
            dismissed: info.dismissed,
            description: info.description.clone(),
            avatar: (!info.avatar.is_empty()).then(|| {
                serde_json::json!({"sha256": info.avatar, "url": self.message_url(&info.avatar)})
            }),
            announcement: (!info.announcement.text.is_empty()).then(|| {
                serde_json::json!({
                    "text": info.announcement.text,
                    "version": info.announcement.version,
                    "at_ms": info.announcement.at_ms,
                    "by_user": info.announcement.by_user,
                })
            }),
            my_role: my_role.map(|r| role_name(r).into()),
        }
    }

    /// Applies `change` to `group`, stored with the event `announce` (see
    /// [`announcements`]) in the same commit and delivered like any message. In a
    /// cluster the change is made by the node that owns the group's conversation,
    /// in order with the group's messages.
    pub(crate) async fn change_group(
        &self,
        group: u64,
        change: GroupChange,
        announce: Option<Event>,
        actor: u64,
    ) -> Result<GroupChanged, ApiError> {
        if let Some(cluster) = &self.cluster {
            if let Some(owner) = cluster.owner_of(&ConversationId::Group(group)) {
                return cluster
                    .forward_group_change(&owner, group, change, announce, actor)
                    .await;
            }
        }
        Ok(self
            .store
            .change_group(group, change, announced(actor, announce))
            .await??)
    }

    /// Creates a group owned by `owner`; `members` are added or invited by the
    /// `group_add_policy` (never across a block).
    pub async fn create_group(
        &self,
        owner: u64,
        name: String,
        policy: JoinPolicy,
        history_visible: bool,
        members: Vec<u64>,
    ) -> Result<GroupView, ApiError> {
        check_name("group name", &name, MAX_GROUP_NAME_BYTES)?;
        let mut members: Vec<u64> = members.into_iter().filter(|&m| m != owner).collect();
        members.sort_unstable();
        members.dedup();
        if members.len() as u64 + 1 > self.config.max_group_members {
            return Err(ApiError::new(
                ErrorCode::GroupFull,
                "more members than a group may have",
            ));
        }
        for &m in &members {
            self.require_user(m).await?;
        }
        self.limits.user(Limit::GroupCreate, owner)?;
        self.limits
            .user_n(Limit::MemberAdd, owner, members.len() as u32)?;
        let mut consent = self.sort_by_consent(owner, members).await?;
        let later = consent
            .join_now
            .split_off(consent.join_now.len().min(MAX_ADDED_PER_CHANGE - 1));
        let group_name = name.clone();
        let created = self
            .store
            .create_group(
                owner,
                &name,
                policy,
                history_visible,
                &consent.join_now,
                system_events(owner, move |changed: &GroupChanged| {
                    // The owner's first; those added with it, if any.
                    let mut events = vec![Event::GroupCreated(pb::GroupCreated {
                        name: group_name,
                        by_user: owner,
                    })];
                    let others: Vec<u64> = changed
                        .added
                        .added
                        .iter()
                        .copied()
                        .filter(|&u| u != owner)
                        .collect();
                    if !others.is_empty() {
                        events.push(Event::MembersAdded(pb::MembersAdded {
                            user_ids: others,
                            by_user: owner,
                        }));
                    }
                    events
                }),
            )
            .await?;
        let info = created
            .info
            .ok_or_else(|| ApiError::internal("a created group has no record"))?;
        if !later.is_empty() {
            self.insert_members(info.id, later, owner).await?;
        }
        self.send_invitations(info.id, owner, consent.invite)
            .await?;
        let info = self.store.group(info.id).await?.unwrap_or(info);
        Ok(self.group_view(&info, Some(Role::Owner)))
    }

    /// Splits the users `by` wants in a group into who joins now, who is invited and
    /// who is refused (a block either way), by `group_add_policy`.
    async fn sort_by_consent(&self, by: u64, users: Vec<u64>) -> Result<Consent, ApiError> {
        let mut consent = Consent::default();
        for user in users {
            let relation = self.store.relation(by, user).await?;
            if relation.blocking || relation.blocked_by {
                consent.refused.push(user);
                continue;
            }
            let now = match self.config.group_add_policy {
                GroupAddPolicy::Anyone => true,
                GroupAddPolicy::Friends => relation.friend,
                GroupAddPolicy::Invite => false,
            };
            if now {
                consent.join_now.push(user);
            } else {
                consent.invite.push(user);
            }
        }
        Ok(consent)
    }

    /// Records invitations to `group` from `by` (users already in it are skipped).
    async fn send_invitations(
        &self,
        group: u64,
        by: u64,
        users: Vec<u64>,
    ) -> Result<Vec<u64>, ApiError> {
        if users.is_empty() {
            return Ok(users);
        }
        let now = courier_storage::now_ms();
        let mut invited = Vec::with_capacity(users.len());
        for user in users {
            if self.store.member(group, user).await?.is_none() {
                self.store.invite(user, group, by, now).await?;
                invited.push(user);
            }
        }
        Ok(invited)
    }

    /// The caller's pending invitations.
    pub async fn invitations(&self, user: u64) -> Result<Vec<InvitationView>, ApiError> {
        let mut out = Vec::new();
        for i in self.store.invitations(user).await? {
            let Some(info) = self.store.group(i.group_id).await? else {
                continue;
            };
            out.push(InvitationView {
                group_id: i.group_id,
                name: info.name,
                inviter: i.inviter,
                inviter_name: self.name_of(i.inviter).await?,
                created_ms: i.created_ms,
            });
        }
        Ok(out)
    }

    /// Accepts an invitation: the user joins the group (refused if either now blocks
    /// the other).
    pub async fn accept_invitation(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let invitation = self
            .store
            .take_invitation(user, group)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invitation"))?;
        let relation = self.store.relation(user, invitation.inviter).await?;
        if relation.blocking || relation.blocked_by {
            return Err(ApiError::new(
                ErrorCode::Blocked,
                "a block stands between you and the inviter",
            ));
        }
        self.join_as_member(group, user, invitation.inviter).await
    }

    /// Declines (drops) an invitation.
    pub async fn decline_invitation(&self, group: u64, user: u64) -> Result<(), ApiError> {
        self.store
            .take_invitation(user, group)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invitation"))?;
        Ok(())
    }

    /// A group's info: for members, and for anyone when the group is open.
    pub async fn group_info(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let info = self
            .store
            .group(group)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        let role = self.store.member(group, user).await?.map(|m| m.role);
        // An invite-only group is hidden from outsiders; others show who they are
        // to whoever would join or ask to.
        if role.is_none() && info.join_policy == JoinPolicy::InviteOnly {
            return Err(ApiError::new(ErrorCode::NotFound, "no such group"));
        }
        Ok(self.group_view(&info, role))
    }

    /// The groups `user` belongs to.
    pub async fn groups_of(&self, user: u64) -> Result<Vec<GroupView>, ApiError> {
        let mut out = Vec::new();
        for entry in self.store.conversations(user).await? {
            let ConversationId::Group(g) = entry.conversation else {
                continue;
            };
            let Some(member) = self.store.member(g, user).await? else {
                continue;
            };
            if let Some(info) = self.store.group(g).await? {
                out.push(self.group_view(&info, Some(member.role)));
            }
        }
        Ok(out)
    }

    /// Changes name or settings (owner or admin).
    pub async fn update_group(
        &self,
        group: u64,
        user: u64,
        name: Option<String>,
        policy: Option<JoinPolicy>,
        history_visible: Option<bool>,
    ) -> Result<GroupView, ApiError> {
        let (_, role) = self.role_in(group, user).await?;
        if role < Role::Admin {
            return Err(ApiError::forbidden(
                "only the owner and admins change group settings",
            ));
        }
        if let Some(name) = &name {
            check_name("group name", name, MAX_GROUP_NAME_BYTES)?;
        }
        let renamed = name.clone().map(|name| {
            Event::GroupRenamed(pb::GroupRenamed {
                name,
                by_user: user,
            })
        });
        let change = GroupChange::Update {
            name,
            join_policy: policy,
            history_visible,
        };
        let changed = self.change_group(group, change, renamed, user).await?;
        let info = changed
            .info
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        Ok(self.group_view(&info, Some(role)))
    }

    /// A page of members (members only).
    pub async fn group_members(
        &self,
        group: u64,
        user: u64,
        after: u64,
        limit: usize,
    ) -> Result<MemberList, ApiError> {
        self.role_in(group, user).await?;
        let limit = limit.clamp(1, MAX_MEMBER_PAGE);
        let page = self.store.members(group, after, limit).await?;
        let next_after = (page.len() == limit)
            .then(|| page.last().map(|m| m.user_id))
            .flatten();
        let mut members = Vec::with_capacity(page.len());
        for m in page {
            members.push(MemberView {
                user_id: m.user_id,
                name: self.name_of(m.user_id).await?,
                role: role_name(m.role).into(),
                joined_ms: m.joined_ms,
                muted_until_ms: muted_until(&m),
            });
        }
        Ok(MemberList {
            members,
            next_after,
        })
    }

    /// Adds or invites users (owners and admins; any member of an open group), by
    /// the `group_add_policy`; never across a block.
    pub async fn add_members(
        &self,
        group: u64,
        by: u64,
        users: Vec<u64>,
    ) -> Result<AddedMembers, ApiError> {
        let (info, role) = self.role_in(group, by).await?;
        if role < Role::Admin && info.join_policy != JoinPolicy::Open {
            return Err(ApiError::forbidden(
                "only the owner and admins add members to this group",
            ));
        }
        let mut banned = Vec::new();
        let mut wanted = Vec::with_capacity(users.len());
        for u in users {
            self.require_user(u).await?;
            match self.store.banned(group, u).await? {
                true => banned.push(u),
                false => wanted.push(u),
            }
        }
        self.limits
            .user_n(Limit::MemberAdd, by, wanted.len() as u32)?;
        let Consent {
            join_now,
            invite,
            refused,
        } = self.sort_by_consent(by, wanted).await?;
        // A ban that came after the check above is the store's to apply.
        let added = self.insert_members(group, join_now, by).await?;
        banned.extend(added.banned);
        let invited = self.send_invitations(group, by, invite).await?;
        Ok(AddedMembers {
            added: added.added,
            already_members: added.already_members,
            over_limit: added.over_limit,
            invited,
            refused,
            banned,
        })
    }

    /// Administrative bulk import: adds `users` to `group` as plain members on
    /// `by`'s behalf, without consent or limits (a group moved from another system,
    /// a load test), with the events that say so; users past the size limit are
    /// left out.
    pub async fn import_members(
        &self,
        group: u64,
        users: Vec<u64>,
        by: u64,
    ) -> Result<courier_storage::AddedMembers, ApiError> {
        self.insert_members(group, users, by).await
    }

    /// Adds `users` as plain members (no checks) with the event that says so; returns
    /// who was added and who was a member already. Users past the size limit are
    /// left out.
    async fn insert_members(
        &self,
        group: u64,
        users: Vec<u64>,
        by: u64,
    ) -> Result<courier_storage::AddedMembers, ApiError> {
        let mut out = courier_storage::AddedMembers::default();
        // One change (and one event) per part: a change is one log record.
        for part in users.chunks(MAX_ADDED_PER_CHANGE) {
            let change = GroupChange::Add {
                users: part.to_vec(),
                role: Role::Member,
                max_members: self.config.max_group_members,
            };
            let announce = Event::MembersAdded(pb::MembersAdded {
                user_ids: Vec::new(),
                by_user: by,
            });
            let added = match self.change_group(group, change, Some(announce), by).await {
                Ok(changed) => changed.added,
                // A later part found the group full: its users did not fit.
                Err(e) if e.code == ErrorCode::GroupFull && !out.added.is_empty() => {
                    out.over_limit.extend_from_slice(part);
                    continue;
                }
                // Everyone of this part is banned (or a member already).
                Err(e) if e.code == ErrorCode::BannedFromGroup && part.len() > 1 => {
                    for &u in part {
                        match self.store.member(group, u).await? {
                            Some(_) => out.already_members.push(u),
                            None => out.banned.push(u),
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.added.extend(added.added);
            out.already_members.extend(added.already_members);
            out.over_limit.extend(added.over_limit);
            out.banned.extend(added.banned);
        }
        Ok(out)
    }

    /// Joins an open group.
    pub async fn join_group(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let info = self
            .store
            .group(group)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        if info.join_policy != JoinPolicy::Open {
            return Err(ApiError::new(ErrorCode::NotFound, "no such group"));
        }
        self.join_as_member(group, user, user).await
    }

    /// Adds `user` as a plain member (its own doing, `by`'s invitation accepted, or
    /// its request approved by `by`) and tells the group.
    pub(crate) async fn join_as_member(
        &self,
        group: u64,
        user: u64,
        by: u64,
    ) -> Result<GroupView, ApiError> {
        let change = GroupChange::Add {
            users: vec![user],
            role: Role::Member,
            max_members: self.config.max_group_members,
        };
        let joined = Event::MemberJoined(pb::MemberJoined {
            user_id: user,
            by_user: by,
        });
        let changed = self.change_group(group, change, Some(joined), user).await?;
        if changed.added.added.is_empty() {
            return Err(MembershipRefusal::AlreadyMember.into());
        }
        self.group_info(group, user).await
    }

    /// Removes `target` from the group: `by == target` is leaving; otherwise the owner
    /// removes anyone, an admin removes plain members.
    pub async fn remove_member(&self, group: u64, by: u64, target: u64) -> Result<(), ApiError> {
        let (info, role) = self.role_in(group, by).await?;
        if by != target {
            let target_role = self
                .store
                .member(group, target)
                .await?
                .ok_or_else(|| ApiError::from(MembershipRefusal::NotMember))?
                .role;
            if role < Role::Admin || target_role >= role {
                return Err(ApiError::forbidden("you may not remove this member"));
            }
        } else if info.owner == by {
            return Err(MembershipRefusal::IsOwner.into());
        }
        // The event is the removed member's last message from the group.
        let event = Event::MemberLeft(pb::MemberLeft {
            user_id: target,
            by_user: by,
            removed: by != target,
        });
        self.change_group(group, GroupChange::Remove { user: target }, Some(event), by)
            .await?;
        Ok(())
    }

    /// Sets a member's role to admin or member (owner only).
    pub async fn set_role(
        &self,
        group: u64,
        by: u64,
        target: u64,
        role: Role,
    ) -> Result<MemberView, ApiError> {
        let (_, my_role) = self.role_in(group, by).await?;
        if my_role != Role::Owner {
            return Err(ApiError::forbidden("only the owner changes roles"));
        }
        if role == Role::Owner {
            return Err(ApiError::invalid("use transfer to hand over ownership"));
        }
        let event = Event::RoleChanged(pb::RoleChanged {
            user_id: target,
            role: role_name(role).into(),
            by_user: by,
        });
        let changed = self
            .change_group(
                group,
                GroupChange::SetRole { user: target, role },
                Some(event),
                by,
            )
            .await?;
        let member = changed
            .member
            .ok_or_else(|| ApiError::internal("a role change returned no member"))?;
        self.member_view(&member).await
    }

    /// How a member is shown.
    pub(crate) async fn member_view(
        &self,
        member: &courier_storage::Member,
    ) -> Result<MemberView, ApiError> {
        Ok(MemberView {
            user_id: member.user_id,
            name: self.require_user(member.user_id).await?,
            role: role_name(member.role).into(),
            joined_ms: member.joined_ms,
            muted_until_ms: muted_until(member),
        })
    }

    /// Hands ownership to another member (owner only); the old owner becomes admin.
    pub async fn transfer_group(
        &self,
        group: u64,
        by: u64,
        target: u64,
    ) -> Result<GroupView, ApiError> {
        let (_, my_role) = self.role_in(group, by).await?;
        if my_role != Role::Owner {
            return Err(ApiError::forbidden("only the owner transfers ownership"));
        }
        let event = Event::OwnerChanged(pb::OwnerChanged {
            new_owner: target,
            by_user: by,
        });
        self.change_group(
            group,
            GroupChange::Transfer { new_owner: target },
            Some(event),
            by,
        )
        .await?;
        self.group_info(group, by).await
    }

    /// Parses a role name for [`Self::set_role`].
    pub fn parse_role(s: &str) -> Result<Role, ApiError> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "owner" => Err(ApiError::invalid("use transfer to hand over ownership")),
            _ => Err(ApiError::invalid("role is `admin` or `member`")),
        }
    }
}
