//! Changes to a group (creation, members added and removed, roles, ownership,
//! settings), decided by the writer of the group's shard in log order and stored as
//! one commit-log record together with the system events that announce them. After
//! any crash a change is there with its events or not at all; a removed member's
//! last message is the event of its removal, and the writer refuses its sends from
//! there on; the commit listener hears of the change before anything stored after
//! it.
//!
//! The group's records (`groupid_group`, `groupmember_member`) are written only
//! here, through the group shard's log. Each member's conversation-index entry
//! (on the member's own shard) is written by `Join` and `Leave` ops that name the
//! membership they belong to (see `ops`).

use bytes::Bytes;
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::group_rules::{decide, MemberReader, Proposal};
use crate::groups::{member_key, validate_group_name};
use crate::ops::{Op, Tree};
use crate::record::ConversationState;
use crate::writer::{Event, OpsRequest, PlanContext, Planned};
use crate::{
    AddedMembers, Appended, GroupInfo, JoinPolicy, Member, MembershipRefusal, Role, Store,
};

/// Most users one change may add (or a new group may start with): a change is one
/// commit-log record, and a record has a size cap. Callers split larger additions.
pub const MAX_ADDED_PER_CHANGE: usize = 32_768;

/// A change to an existing group.
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// Adds users with `role` until the group has `max_members`.
    Add {
        /// Who to add (duplicates and members are skipped).
        users: Vec<u64>,
        /// Their role.
        role: Role,
        /// The size cap.
        max_members: u64,
    },
    /// Removes a member (leave or kick); never the owner.
    Remove {
        /// Who.
        user: u64,
    },
    /// Makes a member an admin or a plain member; never the owner.
    SetRole {
        /// Who.
        user: u64,
        /// Admin or member.
        role: Role,
    },
    /// Makes a member the owner; the old owner becomes an admin.
    Transfer {
        /// The new owner.
        new_owner: u64,
    },
    /// Changes the name and settings.
    Update {
        /// A new name.
        name: Option<String>,
        /// A new join policy.
        join_policy: Option<JoinPolicy>,
        /// Whether later members see earlier history.
        history_visible: Option<bool>,
    },
    /// Changes what the group says of itself (each `Some` is set; an empty string
    /// clears it). A new announcement text is the announcement's next version.
    SetProfile {
        /// What the group is about.
        description: Option<String>,
        /// The SHA-256 of an uploaded image.
        avatar: Option<String>,
        /// The pinned announcement.
        announcement: Option<String>,
        /// Who makes the change (the announcement's author).
        by: u64,
    },
    /// Dismisses the group: nobody sends or joins from its event on; the members
    /// keep it, read-only.
    Dismiss,
    /// Mutes (or unmutes) the whole group: only the owner and admins may send.
    MuteAll {
        /// Muted or not.
        muted: bool,
    },
    /// Bans a user (removing it if it is a member; it may not join again until
    /// unbanned), or lifts a ban; never the owner.
    Ban {
        /// Who.
        user: u64,
        /// Banned, or the ban lifted.
        banned: bool,
        /// Who bans (kept with the ban).
        by: u64,
    },
    /// Mutes a member until a time (0 unmutes); never the owner.
    MuteMember {
        /// Who.
        user: u64,
        /// Until when (ms since the Unix epoch).
        until_ms: u64,
    },
}

impl GroupChange {
    /// Checks the change's inputs before it is decided (every backend refuses the
    /// same ones).
    pub fn validate(&self) -> Result<()> {
        match self {
            GroupChange::Update {
                name: Some(name), ..
            } => validate_group_name(name),
            GroupChange::SetProfile {
                description,
                avatar,
                announcement,
                ..
            } => {
                let too_long =
                    |s: &Option<String>, max: usize| s.as_ref().is_some_and(|s| s.len() > max);
                if too_long(description, crate::MAX_GROUP_DESCRIPTION_BYTES)
                    || too_long(announcement, crate::MAX_ANNOUNCEMENT_BYTES)
                    || too_long(avatar, 64)
                {
                    return Err(StorageError::InvalidArgument(
                        "description, avatar or announcement too long",
                    ));
                }
                Ok(())
            }
            GroupChange::Add { users, .. } if users.len() > MAX_ADDED_PER_CHANGE => Err(
                StorageError::InvalidArgument("too many users for one change; add them in parts"),
            ),
            _ => Ok(()),
        }
    }
}

/// Checks a new group's name and first members (every backend).
pub fn validate_new_group(name: &str, members: &[u64]) -> Result<()> {
    validate_group_name(name)?;
    if members.len() >= MAX_ADDED_PER_CHANGE {
        return Err(StorageError::InvalidArgument(
            "too many first members; add the rest in parts",
        ));
    }
    Ok(())
}

/// What a creation that the rules refused answers (every backend).
pub fn creation_refused(refusal: MembershipRefusal) -> StorageError {
    StorageError::InvalidArgument(match refusal {
        MembershipRefusal::Full => "more members than a group may have",
        _ => "a new group refused its members",
    })
}

/// A system event that a change stores in the group's log.
#[derive(Debug, Clone)]
pub struct GroupEvent {
    /// Who caused it.
    pub sender: u64,
    /// Unique per sender (see [`crate::AppendRequest::client_msg_id`]).
    pub client_msg_id: String,
    /// The encoded message body.
    pub body: Bytes,
}

/// What a change did.
#[derive(Debug, Clone, Default)]
pub struct GroupChanged {
    /// The group after the change.
    pub info: Option<GroupInfo>,
    /// For additions and creation: who was added, who was a member already, who
    /// did not fit.
    pub added: AddedMembers,
    /// Who left (a removal).
    pub removed: Vec<u64>,
    /// For a role change or transfer: the member as it is now.
    pub member: Option<Member>,
    /// The events stored with the change, in order.
    pub events: Vec<Appended>,
}

/// Builds a change's events once the writer decided what it does. A change that adds
/// or removes members needs at least one; a role change or a new name may have none.
pub type EventsFor = Box<dyn FnOnce(&GroupChanged) -> Vec<GroupEvent> + Send>;

impl Store {
    /// Creates a group owned by `owner` with `members` (the owner first, then each
    /// of `members` that is not the owner), together with its first events.
    pub async fn create_group(
        &self,
        owner: u64,
        name: &str,
        join_policy: JoinPolicy,
        history_visible: bool,
        members: &[u64],
        events: EventsFor,
    ) -> Result<GroupChanged> {
        validate_new_group(name, members)?;
        // Group ids share sled's id generator with users: unique, never reused.
        let id = self.shard(0).db.generate_id()? + 1;
        let info = GroupInfo {
            id,
            name: name.to_owned(),
            owner,
            join_policy,
            history_visible,
            member_count: 0,
            created_ms: 0,
            muted: false,
            dismissed: false,
            description: String::new(),
            avatar: String::new(),
            announcement: Default::default(),
        };
        let mut users = vec![owner];
        users.extend(members.iter().copied().filter(|&m| m != owner));
        let created = self
            .submit_group_change(id, Plan::Create(info, users), events)
            .await?;
        created.map_err(creation_refused)
    }

    /// Applies `change` to group `id` with the events `events` builds, atomically and
    /// in order with the group's messages; returns once durable.
    pub async fn change_group(
        &self,
        id: u64,
        change: GroupChange,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>> {
        change.validate()?;
        self.submit_group_change(id, Plan::Change(change), events)
            .await
    }

    async fn submit_group_change(
        &self,
        id: u64,
        plan: Plan,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>> {
        let conversation = ConversationId::Group(id);
        let shard = self.inner.map.conversation(&conversation);
        let request = OpsRequest {
            conversation: Some(conversation),
            alone: true,
            plan: Box::new(move |ctx| plan_change(ctx, id, plan, events)),
        };
        match self.run_ops::<GroupChanged>(shard, request).await {
            Ok((mut changed, appended)) => {
                changed.events = appended;
                Ok(Ok(changed))
            }
            Err(StorageError::Membership(refusal)) => Ok(Err(refusal)),
            Err(e) => Err(e),
        }
    }
}

/// A group's members and bans as its shard holds them (read on the writer thread).
struct ShardMembers<'a> {
    shard: &'a crate::shard::ShardDb,
    group: u64,
}

impl MemberReader for ShardMembers<'_> {
    fn member(&self, user: u64) -> Result<Option<Member>> {
        self.shard
            .groupmember_member
            .get(member_key(self.group, user))?
            .map(|v| Member::decode(user, &v))
            .transpose()
    }

    fn banned(&self, user: u64) -> Result<bool> {
        crate::bans::is_banned(&self.shard.log, self.group, user)
    }
}

enum Plan {
    /// A new group (its record's id set, the rest filled in by the writer) and its
    /// first members, the owner first.
    Create(GroupInfo, Vec<u64>),
    Change(GroupChange),
}

/// Decides a change on the writer thread of the group's shard (by the rules of
/// `group_rules`) and turns the decision into ops: member records, the members'
/// conversation entries, the group's record.
fn plan_change(ctx: &PlanContext<'_>, id: u64, plan: Plan, events: EventsFor) -> Result<Planned> {
    let conversation = ConversationId::Group(id);
    let shard_index = ctx.map.conversation(&conversation);
    let shard = &ctx.shards[shard_index];
    let existing = shard
        .groupid_group
        .get(id.to_be_bytes())?
        .map(|v| GroupInfo::decode(id, &v))
        .transpose()?;
    if matches!(plan, Plan::Create(..)) && existing.is_some() {
        return Err(StorageError::Corrupt("group id reused"));
    }
    let proposal = match plan {
        Plan::Create(info, users) => Proposal::Create(info, users),
        Plan::Change(change) => Proposal::Change(change),
    };
    let read = ShardMembers { shard, group: id };
    let decision = decide(id, existing, &read, proposal, ctx.next_seq, ctx.now)?
        .map_err(StorageError::Membership)?;
    let mut ops = Vec::with_capacity(
        2 * (decision.joined.len() + decision.removed.len())
            + decision.updated.len()
            + decision.bans.len()
            + 1,
    );
    let put = |m: &Member| Op::Put {
        shard: shard_index as u16,
        tree: Tree::Member,
        key: member_key(id, m.user_id).to_vec(),
        value: m.encode().to_vec(),
    };
    for m in &decision.joined {
        ops.push(put(m));
        ops.push(Op::Join {
            user: m.user_id,
            conversation,
            state: ConversationState {
                joined_seq: m.joined_seq,
                read_seq: m.joined_seq,
                created_ms: m.joined_ms,
                since_seq: m.since_seq,
                ..ConversationState::default()
            },
        });
    }
    ops.extend(decision.updated.iter().map(put));
    for &user in &decision.removed {
        ops.push(Op::Delete {
            shard: shard_index as u16,
            tree: Tree::Member,
            key: member_key(id, user).to_vec(),
        });
        ops.push(Op::Leave {
            user,
            conversation,
            before: ctx.next_seq,
        });
    }
    for (user, ban) in &decision.bans {
        let key = crate::bans::ban_key(id, *user);
        ops.push(match ban {
            Some(ban) => Op::Put {
                shard: shard_index as u16,
                tree: Tree::Log,
                key,
                value: crate::bans::encode_ban(ban),
            },
            None => Op::Delete {
                shard: shard_index as u16,
                tree: Tree::Log,
                key,
            },
        });
    }
    let changed = decision.changed;
    if decision.noop {
        return Ok(Planned {
            ops: Vec::new(),
            events: Vec::new(),
            membership: None,
            outcome: Box::new(changed),
        });
    }
    ops.push(Op::Put {
        shard: shard_index as u16,
        tree: Tree::Group,
        key: id.to_be_bytes().to_vec(),
        value: decision.info.encode(),
    });
    let membership = decision.membership;
    let events: Vec<Event> = events(&changed)
        .into_iter()
        .map(|e| Event {
            sender: e.sender,
            client_msg_id: e.client_msg_id,
            body: e.body,
        })
        .collect();
    // A membership is named by the seq of the event that made it (and a removal's
    // event is the last thing the member may see): no event, no such name.
    if membership.is_some() && events.is_empty() {
        return Err(StorageError::InvalidArgument(
            "a change of members needs an event",
        ));
    }
    Ok(Planned {
        ops,
        events,
        membership,
        outcome: Box::new(changed),
    })
}
