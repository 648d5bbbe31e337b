//! Groups: creation, membership and roles, with the rules an IM user expects:
//! the creator owns the group; owners and admins add and remove people and rename;
//! only the owner changes roles and hands ownership over, and must do so before
//! leaving; anyone may join an open group by id. Every membership change is appended
//! to the group's log as a system event, so members learn of it through sync.

use courier_protocol::pb::{self, message_body::Content, system_event::Event};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, GroupInfo, JoinPolicy, MembershipRefusal, Role};
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
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

/// Parses `open` / `invite`.
pub fn parse_policy(s: &str) -> Result<JoinPolicy, ApiError> {
    match s {
        "open" => Ok(JoinPolicy::Open),
        "invite" | "invite_only" => Ok(JoinPolicy::InviteOnly),
        _ => Err(ApiError::invalid("join_policy is `open` or `invite`")),
    }
}

impl Api {
    /// The caller's role in `group`, or FORBIDDEN/NOT_FOUND when it has none.
    fn role_in(&self, group: u64, user: u64) -> Result<(GroupInfo, Role), ApiError> {
        let info = self
            .store
            .group(group)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        let member = self
            .store
            .member(group, user)?
            .ok_or_else(|| ApiError::forbidden("not a member of this group"))?;
        Ok((info, member.role))
    }

    fn group_view(&self, info: &GroupInfo, my_role: Option<Role>) -> GroupView {
        GroupView {
            group_id: info.id,
            conversation: ConversationId::Group(info.id).to_string(),
            name: info.name.clone(),
            owner: info.owner,
            join_policy: match info.join_policy {
                JoinPolicy::Open => "open",
                JoinPolicy::InviteOnly => "invite",
            }
            .into(),
            history_visible: info.history_visible,
            member_count: info.member_count,
            created_ms: info.created_ms,
            my_role: my_role.map(|r| role_name(r).into()),
        }
    }

    /// Appends a system event to a group's log (delivered like any message).
    async fn group_event(&self, group: u64, actor: u64, event: Event) -> Result<(), ApiError> {
        let body = pb::MessageBody {
            content: Some(Content::System(pb::SystemEvent { event: Some(event) })),
        };
        self.store
            .append(AppendRequest {
                conversation: ConversationId::Group(group),
                sender: actor,
                sender_device: String::new(),
                client_msg_id: crate::api::system_msg_id(),
                body: body.encode_to_vec().into(),
                reply_to_seq: 0,
                recalls: 0,
            })
            .await?;
        Ok(())
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
            self.require_user(m)?;
        }
        self.limits.user(Limit::GroupCreate, owner)?;
        self.limits
            .user_n(Limit::MemberAdd, owner, members.len() as u32)?;
        let consent = self.sort_by_consent(owner, members)?;
        let info = self
            .blocking(move |store| Ok(store.create_group(owner, &name, policy, history_visible)?))
            .await?;
        // Members are in before the first event, so everyone sees the whole log.
        let added = self.insert_members(info.id, consent.join_now).await?.added;
        let created = Event::GroupCreated(pb::GroupCreated {
            name: info.name.clone(),
            by_user: owner,
        });
        self.group_event(info.id, owner, created).await?;
        if !added.is_empty() {
            let event = Event::MembersAdded(pb::MembersAdded {
                user_ids: added,
                by_user: owner,
            });
            self.group_event(info.id, owner, event).await?;
        }
        self.send_invitations(info.id, owner, consent.invite)
            .await?;
        let info = self.store.group(info.id)?.unwrap_or(info);
        Ok(self.group_view(&info, Some(Role::Owner)))
    }

    /// Splits the users `by` wants in a group into who joins now, who is invited and
    /// who is refused (a block either way), by `group_add_policy`.
    fn sort_by_consent(&self, by: u64, users: Vec<u64>) -> Result<Consent, ApiError> {
        let mut consent = Consent::default();
        for user in users {
            let relation = self.store.relation(by, user)?;
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
        self.blocking(move |store| {
            let now = courier_storage::now_ms();
            let mut invited = Vec::with_capacity(users.len());
            for user in users {
                if store.member(group, user)?.is_none() {
                    store.invite(user, group, by, now)?;
                    invited.push(user);
                }
            }
            Ok(invited)
        })
        .await
    }

    /// The caller's pending invitations.
    pub fn invitations(&self, user: u64) -> Result<Vec<InvitationView>, ApiError> {
        let mut out = Vec::new();
        for i in self.store.invitations(user)? {
            let Some(info) = self.store.group(i.group_id)? else {
                continue;
            };
            out.push(InvitationView {
                group_id: i.group_id,
                name: info.name,
                inviter: i.inviter,
                inviter_name: self
                    .store
                    .account(i.inviter)?
                    .map(|a| a.name)
                    .unwrap_or_default(),
                created_ms: i.created_ms,
            });
        }
        Ok(out)
    }

    /// Accepts an invitation: the user joins the group (refused if either now blocks
    /// the other).
    pub async fn accept_invitation(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let invitation = self
            .blocking(move |store| Ok(store.take_invitation(user, group)?))
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invitation"))?;
        let relation = self.store.relation(user, invitation.inviter)?;
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
        self.blocking(move |store| Ok(store.take_invitation(user, group)?))
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such invitation"))?;
        Ok(())
    }

    /// A group's info: for members, and for anyone when the group is open.
    pub fn group_info(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let info = self
            .store
            .group(group)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        let role = self.store.member(group, user)?.map(|m| m.role);
        if role.is_none() && info.join_policy != JoinPolicy::Open {
            return Err(ApiError::new(ErrorCode::NotFound, "no such group"));
        }
        Ok(self.group_view(&info, role))
    }

    /// The groups `user` belongs to.
    pub fn groups_of(&self, user: u64) -> Result<Vec<GroupView>, ApiError> {
        let mut out = Vec::new();
        for entry in self.store.conversations(user)? {
            let ConversationId::Group(g) = entry.conversation else {
                continue;
            };
            let Some(member) = self.store.member(g, user)? else {
                continue;
            };
            if let Some(info) = self.store.group(g)? {
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
        let (_, role) = self.role_in(group, user)?;
        if role < Role::Admin {
            return Err(ApiError::forbidden(
                "only the owner and admins change group settings",
            ));
        }
        if let Some(name) = &name {
            check_name("group name", name, MAX_GROUP_NAME_BYTES)?;
        }
        let new_name = name.clone();
        let info = self
            .blocking(move |store| {
                Ok(store.update_group(group, name.as_deref(), policy, history_visible)?)
            })
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        if let Some(name) = new_name {
            self.group_event(
                group,
                user,
                Event::GroupRenamed(pb::GroupRenamed {
                    name,
                    by_user: user,
                }),
            )
            .await?;
        }
        Ok(self.group_view(&info, Some(role)))
    }

    /// A page of members (members only).
    pub fn group_members(
        &self,
        group: u64,
        user: u64,
        after: u64,
        limit: usize,
    ) -> Result<MemberList, ApiError> {
        self.role_in(group, user)?;
        let limit = limit.clamp(1, MAX_MEMBER_PAGE);
        let page = self.store.members(group, after, limit)?;
        let next_after = (page.len() == limit)
            .then(|| page.last().map(|m| m.user_id))
            .flatten();
        let members = page
            .into_iter()
            .map(|m| {
                Ok(MemberView {
                    user_id: m.user_id,
                    name: self
                        .store
                        .account(m.user_id)?
                        .map(|a| a.name)
                        .unwrap_or_default(),
                    role: role_name(m.role).into(),
                    joined_ms: m.joined_ms,
                })
            })
            .collect::<Result<_, ApiError>>()?;
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
        let (info, role) = self.role_in(group, by)?;
        if role < Role::Admin && info.join_policy != JoinPolicy::Open {
            return Err(ApiError::forbidden(
                "only the owner and admins add members to this group",
            ));
        }
        for &u in &users {
            self.require_user(u)?;
        }
        self.limits
            .user_n(Limit::MemberAdd, by, users.len() as u32)?;
        let Consent {
            join_now,
            invite,
            refused,
        } = self.sort_by_consent(by, users)?;
        let courier_storage::AddedMembers {
            added,
            already_members,
            over_limit,
        } = self.insert_members(group, join_now).await?;
        if !added.is_empty() {
            let event = Event::MembersAdded(pb::MembersAdded {
                user_ids: added.clone(),
                by_user: by,
            });
            self.group_event(group, by, event).await?;
        }
        let invited = self.send_invitations(group, by, invite).await?;
        Ok(AddedMembers {
            added,
            already_members,
            over_limit,
            invited,
            refused,
        })
    }

    /// Adds `users` as plain members (no checks, no event); returns who was added and
    /// who was a member already. Users past the size limit are left out.
    async fn insert_members(
        &self,
        group: u64,
        users: Vec<u64>,
    ) -> Result<courier_storage::AddedMembers, ApiError> {
        let max = self.config.max_group_members;
        let result = self
            .blocking(move |store| Ok(store.add_members(group, &users, Role::Member, max)??))
            .await;
        self.members.invalidate(group);
        result
    }

    /// Joins an open group.
    pub async fn join_group(&self, group: u64, user: u64) -> Result<GroupView, ApiError> {
        let info = self
            .store
            .group(group)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        if info.join_policy != JoinPolicy::Open {
            return Err(ApiError::new(ErrorCode::NotFound, "no such group"));
        }
        self.join_as_member(group, user, user).await
    }

    /// Adds `user` as a plain member (its own doing, or `by`'s invitation accepted)
    /// and tells the group.
    async fn join_as_member(&self, group: u64, user: u64, by: u64) -> Result<GroupView, ApiError> {
        let max = self.config.max_group_members;
        self.blocking(move |store| Ok(store.add_member(group, user, Role::Member, max)??))
            .await?;
        self.members.invalidate(group);
        let joined = Event::MemberJoined(pb::MemberJoined {
            user_id: user,
            by_user: by,
        });
        self.group_event(group, user, joined).await?;
        self.group_info(group, user)
    }

    /// Removes `target` from the group: `by == target` is leaving; otherwise the owner
    /// removes anyone, an admin removes plain members.
    pub async fn remove_member(&self, group: u64, by: u64, target: u64) -> Result<(), ApiError> {
        let (info, role) = self.role_in(group, by)?;
        if by != target {
            let target_role = self
                .store
                .member(group, target)?
                .ok_or_else(|| ApiError::from(MembershipRefusal::NotMember))?
                .role;
            if role < Role::Admin || target_role >= role {
                return Err(ApiError::forbidden("you may not remove this member"));
            }
        } else if info.owner == by {
            return Err(MembershipRefusal::IsOwner.into());
        }
        // The event goes out while the member still is one, so it learns of it too.
        let event = Event::MemberLeft(pb::MemberLeft {
            user_id: target,
            by_user: by,
            removed: by != target,
        });
        self.group_event(group, by, event).await?;
        let removed = self
            .blocking(move |store| Ok(store.remove_member(group, target)?))
            .await;
        // Whatever happened, the cache must not keep a stale list.
        self.members.invalidate(group);
        removed??;
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
        let (_, my_role) = self.role_in(group, by)?;
        if my_role != Role::Owner {
            return Err(ApiError::forbidden("only the owner changes roles"));
        }
        if role == Role::Owner {
            return Err(ApiError::invalid("use transfer to hand over ownership"));
        }
        let member = self
            .blocking(move |store| Ok(store.set_role(group, target, role)??))
            .await?;
        let event = Event::RoleChanged(pb::RoleChanged {
            user_id: target,
            role: role_name(role).into(),
            by_user: by,
        });
        self.group_event(group, by, event).await?;
        Ok(MemberView {
            user_id: target,
            name: self.require_user(target)?,
            role: role_name(member.role).into(),
            joined_ms: member.joined_ms,
        })
    }

    /// Hands ownership to another member (owner only); the old owner becomes admin.
    pub async fn transfer_group(
        &self,
        group: u64,
        by: u64,
        target: u64,
    ) -> Result<GroupView, ApiError> {
        let (_, my_role) = self.role_in(group, by)?;
        if my_role != Role::Owner {
            return Err(ApiError::forbidden("only the owner transfers ownership"));
        }
        self.blocking(move |store| Ok(store.transfer_ownership(group, target)??))
            .await?;
        let event = Event::OwnerChanged(pb::OwnerChanged {
            new_owner: target,
            by_user: by,
        });
        self.group_event(group, by, event).await?;
        self.group_info(group, by)
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
