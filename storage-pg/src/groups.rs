//! Groups on PostgreSQL. A change is decided by `courier_storage::group_rules` and
//! written by the committer that owns the group's conversation, alone in one
//! transaction that holds the conversation's row lock: the group's messages and its
//! membership changes are ordered by that lock (a removed member's later sends are
//! refused; a batch's membership check sees every change committed before it), and
//! the change's events take their seqs in the same transaction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use courier_protocol::ConversationId;
use courier_storage::group_rules::{decide, MemberReader, Proposal};
use courier_storage::{
    creation_refused, now_ms, validate_join_request, validate_new_group, Appended, Ban,
    CommitListener, EventsFor, GroupChange, GroupChanged, GroupInfo, Groups, Invitation,
    JoinPolicy, JoinRequest, Member, MembershipRefusal, Result, Role, StorageError, StoredMessage,
    MAX_PENDING_INVITATIONS, MAX_PENDING_JOIN_REQUESTS,
};
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::committer::{index_for_users, insert_messages, lock_conversation, Command};
use crate::connect::{Prepared, Tx};
use crate::error::pg;
use crate::PgStore;

/// What a group change answers.
pub(crate) type GroupReply = Result<std::result::Result<GroupChanged, MembershipRefusal>>;

/// A group change queued on the committer of the group's conversation.
pub(crate) struct GroupRequest {
    pub id: u64,
    pub proposal: Proposal,
    pub events: EventsFor,
    pub reply: oneshot::Sender<GroupReply>,
}

const MEMBER: &str = "user_id, role, joined_seq, joined_ms, since_seq, muted_until_ms";
const GROUP: &str = "id, name, owner, join_policy, history_visible, member_count, created_ms, \
    muted, description, avatar, announcement, announcement_version, announcement_at_ms, \
    announcement_by, dismissed";

fn role_from(v: i16) -> Result<Role> {
    match v {
        1 => Ok(Role::Member),
        2 => Ok(Role::Admin),
        3 => Ok(Role::Owner),
        _ => Err(StorageError::Corrupt("member role")),
    }
}

fn member_from_row(r: &tokio_postgres::Row) -> Result<Member> {
    Ok(Member {
        user_id: r.get::<_, i64>(0) as u64,
        role: role_from(r.get(1))?,
        joined_seq: r.get::<_, i64>(2) as u64,
        joined_ms: r.get::<_, i64>(3) as u64,
        since_seq: r.get::<_, i64>(4) as u64,
        muted_until_ms: r.get::<_, i64>(5) as u64,
    })
}

fn policy_code(p: JoinPolicy) -> i16 {
    match p {
        JoinPolicy::Open => 0,
        JoinPolicy::InviteOnly => 1,
        JoinPolicy::Approval => 2,
    }
}

fn group_from_row(r: &tokio_postgres::Row) -> Result<GroupInfo> {
    Ok(GroupInfo {
        id: r.get::<_, i64>(0) as u64,
        name: r.get(1),
        owner: r.get::<_, i64>(2) as u64,
        join_policy: match r.get::<_, i16>(3) {
            0 => JoinPolicy::Open,
            1 => JoinPolicy::InviteOnly,
            2 => JoinPolicy::Approval,
            _ => return Err(StorageError::Corrupt("join policy")),
        },
        history_visible: r.get(4),
        member_count: r.get::<_, i64>(5) as u64,
        created_ms: r.get::<_, i64>(6) as u64,
        muted: r.get(7),
        description: r.get(8),
        avatar: r.get(9),
        announcement: courier_storage::Announcement {
            text: r.get(10),
            version: r.get::<_, i64>(11) as u64,
            at_ms: r.get::<_, i64>(12) as u64,
            by_user: r.get::<_, i64>(13) as u64,
        },
        dismissed: r.get(14),
    })
}

/// The users a change reads the membership of (and the owner, whom a transfer
/// demotes).
fn named_users(proposal: &Proposal, owner: Option<u64>) -> Vec<i64> {
    let mut users: Vec<u64> = match proposal {
        Proposal::Create(..) => Vec::new(),
        Proposal::Change(GroupChange::Add { users, .. }) => users.clone(),
        Proposal::Change(GroupChange::Remove { user } | GroupChange::SetRole { user, .. }) => {
            vec![*user]
        }
        Proposal::Change(GroupChange::Transfer { new_owner }) => vec![*new_owner],
        Proposal::Change(GroupChange::MuteMember { user, .. } | GroupChange::Ban { user, .. }) => {
            vec![*user]
        }
        Proposal::Change(
            GroupChange::Update { .. }
            | GroupChange::MuteAll { .. }
            | GroupChange::SetProfile { .. }
            | GroupChange::Dismiss,
        ) => Vec::new(),
    };
    users.extend(owner);
    users.into_iter().map(|u| u as i64).collect()
}

/// Decides and writes one group change in its own transaction; the listener hears
/// of its events (and who joined and left) before the caller is answered.
pub(crate) async fn apply(
    client: &mut Client,
    prepared: &Prepared,
    req: GroupRequest,
    listener: Option<&Arc<dyn CommitListener>>,
) {
    let GroupRequest {
        id,
        proposal,
        events,
        reply,
    } = req;
    let result = match apply_in_tx(client, prepared, id, proposal, events).await {
        Ok(Ok((changed, messages, membership))) => {
            if let Some(listener) = listener {
                if !messages.is_empty() || membership.is_some() {
                    listener.committed(&messages, membership.as_ref());
                }
            }
            Ok(Ok(changed))
        }
        Ok(Err(refusal)) => Ok(Err(refusal)),
        Err(e) => Err(e),
    };
    let _ = reply.send(result);
}

/// The members and bans a change named, read in its transaction.
struct Read<'a> {
    members: &'a HashMap<u64, Member>,
    banned: &'a HashSet<u64>,
}

impl MemberReader for Read<'_> {
    fn member(&self, user: u64) -> Result<Option<Member>> {
        Ok(self.members.get(&user).copied())
    }

    fn banned(&self, user: u64) -> Result<bool> {
        Ok(self.banned.contains(&user))
    }
}

type Applied = (
    GroupChanged,
    Vec<StoredMessage>,
    Option<courier_storage::MembershipChange>,
);

async fn apply_in_tx(
    client: &mut Client,
    prepared: &Prepared,
    id: u64,
    proposal: Proposal,
    events: EventsFor,
) -> Result<std::result::Result<Applied, MembershipRefusal>> {
    let now = now_ms();
    let conv = ConversationId::Group(id);
    let conv_id = conv.to_string();
    let gid = id as i64;
    let tx = Tx::begin(client, prepared).await?;
    let last = lock_conversation(&tx, &conv_id).await?;
    let next_seq = last as u64 + 1;
    let existing = tx
        .query_opt(
            &format!("SELECT {GROUP} FROM groups WHERE id = $1"),
            &[&gid],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(group_from_row)
        .transpose()?;
    if matches!(proposal, Proposal::Create(..)) && existing.is_some() {
        return Err(StorageError::Corrupt("group id reused"));
    }
    let named = named_users(&proposal, existing.as_ref().map(|g| g.owner));
    let mut members: HashMap<u64, Member> = HashMap::new();
    for row in tx
        .query(
            &format!(
                "SELECT {MEMBER} FROM group_members WHERE group_id = $1 AND user_id = ANY($2)"
            ),
            &[&gid, &named],
        )
        .await
        .map_err(pg)?
    {
        let m = member_from_row(&row)?;
        members.insert(m.user_id, m);
    }
    let banned: HashSet<u64> = tx
        .query(
            "SELECT user_id FROM group_bans WHERE group_id = $1 AND user_id = ANY($2)",
            &[&gid, &named],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect();
    let read = Read {
        members: &members,
        banned: &banned,
    };
    let decision = match decide(id, existing, &read, proposal, next_seq, now)? {
        Ok(d) => d,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let mut changed = decision.changed;
    if decision.noop {
        return Ok(Ok((changed, Vec::new(), None)));
    }
    for m in decision.joined.iter().chain(&decision.updated) {
        write_member(&tx, gid, m).await?;
    }
    for m in &decision.joined {
        // The member's entry in its list, for this membership (an older one of a
        // member who left and came back gives way).
        tx.execute(
            "INSERT INTO user_conversations (user_id, conv, joined_seq, read_seq, created_ms, since_seq)
             VALUES ($1, $2, $3, $3, $4, $5)
             ON CONFLICT (user_id, conv) DO UPDATE SET
               joined_seq = EXCLUDED.joined_seq, read_seq = EXCLUDED.read_seq,
               delivered_seq = 0, muted = false, pinned = false,
               created_ms = EXCLUDED.created_ms, since_seq = EXCLUDED.since_seq
             WHERE user_conversations.since_seq < EXCLUDED.since_seq",
            &[
                &(m.user_id as i64),
                &conv_id,
                &(m.joined_seq as i64),
                &(m.joined_ms as i64),
                &(m.since_seq as i64),
            ],
        )
        .await
        .map_err(pg)?;
    }
    for &user in &decision.removed {
        tx.execute(
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2",
            &[&gid, &(user as i64)],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "DELETE FROM user_conversations WHERE user_id = $1 AND conv = $2 AND since_seq < $3",
            &[&(user as i64), &conv_id, &(next_seq as i64)],
        )
        .await
        .map_err(pg)?;
    }
    for (user, ban) in &decision.bans {
        let user = *user as i64;
        match ban {
            Some(ban) => {
                tx.execute(
                    "INSERT INTO group_bans (group_id, user_id, by_user, at_ms) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (group_id, user_id) DO UPDATE SET
                       by_user = EXCLUDED.by_user, at_ms = EXCLUDED.at_ms",
                    &[&gid, &user, &(ban.by_user as i64), &(ban.at_ms as i64)],
                )
                .await
            }
            None => {
                tx.execute(
                    "DELETE FROM group_bans WHERE group_id = $1 AND user_id = $2",
                    &[&gid, &user],
                )
                .await
            }
        }
        .map_err(pg)?;
    }
    let info = &decision.info;
    tx.execute(
        &format!(
            "INSERT INTO groups ({GROUP})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, owner = EXCLUDED.owner,
               join_policy = EXCLUDED.join_policy, history_visible = EXCLUDED.history_visible,
               member_count = EXCLUDED.member_count, muted = EXCLUDED.muted,
               description = EXCLUDED.description, avatar = EXCLUDED.avatar,
               announcement = EXCLUDED.announcement,
               announcement_version = EXCLUDED.announcement_version,
               announcement_at_ms = EXCLUDED.announcement_at_ms,
               announcement_by = EXCLUDED.announcement_by, dismissed = EXCLUDED.dismissed"
        ),
        &[
            &gid,
            &info.name,
            &(info.owner as i64),
            &policy_code(info.join_policy),
            &info.history_visible,
            &(info.member_count as i64),
            &(info.created_ms as i64),
            &info.muted,
            &info.description,
            &info.avatar,
            &info.announcement.text,
            &(info.announcement.version as i64),
            &(info.announcement.at_ms as i64),
            &(info.announcement.by_user as i64),
            &info.dismissed,
        ],
    )
    .await
    .map_err(pg)?;
    let membership = decision.membership;
    let events = events(&changed);
    if membership.is_some() && events.is_empty() {
        return Err(StorageError::InvalidArgument(
            "a change of members needs an event",
        ));
    }
    let messages: Vec<StoredMessage> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| StoredMessage {
            conversation: conv,
            seq: next_seq + i as u64,
            sender: e.sender,
            sender_device: String::new(),
            client_msg_id: e.client_msg_id,
            server_time_ms: now,
            reply_to_seq: 0,
            body: e.body,
            recalled: None,
            mentions: Vec::new(),
            edited: None,
        })
        .collect();
    if let Some(last) = messages.last() {
        insert_messages(&tx, &messages).await?;
        index_for_users(&tx, &messages, now).await?;
        tx.execute(
            "UPDATE conversations SET last_seq = $2, last_activity = nextval('activity') WHERE id = $1",
            &[&conv_id, &(last.seq as i64)],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)?;
    changed.events = messages
        .iter()
        .map(|m| Appended {
            seq: m.seq,
            server_time_ms: now,
            duplicate: false,
        })
        .collect();
    Ok(Ok((changed, messages, membership)))
}

impl PgStore {
    /// `columns` of `table`'s rows of `group`, by user id above `after`, at most
    /// `limit` (the tables keyed `(group_id, user_id)`: bans, join requests).
    async fn group_page(
        &self,
        columns: &str,
        table: &str,
        group: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.reader()
            .await?
            .query(
                &format!(
                    "SELECT {columns} FROM {table}
                     WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3"
                ),
                &[
                    &(group as i64),
                    &(after.min(i64::MAX as u64) as i64),
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg)
    }
}

async fn write_member(tx: &Tx<'_>, gid: i64, m: &Member) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO group_members (group_id, {MEMBER}) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (group_id, user_id) DO UPDATE SET role = EXCLUDED.role,
               joined_seq = EXCLUDED.joined_seq, joined_ms = EXCLUDED.joined_ms,
               since_seq = EXCLUDED.since_seq, muted_until_ms = EXCLUDED.muted_until_ms"
        ),
        &[
            &gid,
            &(m.user_id as i64),
            &(m.role as i16),
            &(m.joined_seq as i64),
            &(m.joined_ms as i64),
            &(m.since_seq as i64),
            &(m.muted_until_ms.min(i64::MAX as u64) as i64),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

impl PgStore {
    async fn submit_group(
        &self,
        id: u64,
        proposal: Proposal,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>> {
        let conv = ConversationId::Group(id);
        let index = (conv.shard_hash() % self.inner.queues.len() as u64) as usize;
        let (reply, rx) = oneshot::channel();
        self.inner.queues[index]
            .send(Command::Group(GroupRequest {
                id,
                proposal,
                events,
                reply,
            }))
            .await
            .map_err(|_| StorageError::ShuttingDown)?;
        rx.await.map_err(|_| StorageError::ShuttingDown)?
    }
}

#[async_trait]
impl Groups for PgStore {
    async fn group(&self, id: u64) -> Result<Option<GroupInfo>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!("SELECT {GROUP} FROM groups WHERE id = $1"),
                &[&(id as i64)],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(group_from_row).transpose()
    }

    async fn member(&self, id: u64, user: u64) -> Result<Option<Member>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!("SELECT {MEMBER} FROM group_members WHERE group_id = $1 AND user_id = $2"),
                &[&(id as i64), &(user as i64)],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(member_from_row).transpose()
    }

    async fn members(&self, id: u64, after: u64, limit: usize) -> Result<Vec<Member>> {
        let rows = self
            .reader()
            .await?
            .query(
                &format!(
                    "SELECT {MEMBER} FROM group_members WHERE group_id = $1 AND user_id > $2
                     ORDER BY user_id LIMIT $3"
                ),
                &[&(id as i64), &(after as i64), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(member_from_row).collect()
    }

    async fn member_ids(&self, id: u64) -> Result<Vec<(u64, u64)>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT user_id, since_seq FROM group_members WHERE group_id = $1 ORDER BY user_id",
                &[&(id as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn create_group(
        &self,
        owner: u64,
        name: &str,
        join_policy: JoinPolicy,
        history_visible: bool,
        members: &[u64],
        events: EventsFor,
    ) -> Result<GroupChanged> {
        validate_new_group(name, members)?;
        let id: i64 = self
            .reader()
            .await?
            .query_one("SELECT nextval('group_ids')", &[])
            .await
            .map_err(pg)?
            .get(0);
        let info = GroupInfo {
            id: id as u64,
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
        self.submit_group(id as u64, Proposal::Create(info, users), events)
            .await?
            .map_err(creation_refused)
    }

    async fn change_group(
        &self,
        id: u64,
        change: GroupChange,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>> {
        change.validate()?;
        self.submit_group(id, Proposal::Change(change), events)
            .await
    }

    async fn invite(&self, user: u64, group: u64, inviter: u64, now_ms: u64) -> Result<bool> {
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let user = user as i64;
        // The user's invitations change one at a time (the cap counts them).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&(user ^ 0x696e_7669_7465)],
        )
        .await
        .map_err(pg)?;
        let inserted = tx
            .execute(
                "INSERT INTO invitations (user_id, group_id, inviter, created_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&user, &(group as i64), &(inviter as i64), &(now_ms as i64)],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            return Ok(false);
        }
        // Past the cap the oldest gives way.
        tx.execute(
            "DELETE FROM invitations WHERE user_id = $1 AND group_id IN (
                SELECT group_id FROM invitations WHERE user_id = $1
                ORDER BY created_ms, group_id
                LIMIT GREATEST((SELECT count(*) FROM invitations WHERE user_id = $1) - $2, 0))",
            &[&user, &(MAX_PENDING_INVITATIONS as i64)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn invitations(&self, user: u64) -> Result<Vec<Invitation>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT group_id, inviter, created_ms FROM invitations WHERE user_id = $1
                 ORDER BY group_id",
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Invitation {
                group_id: r.get::<_, i64>(0) as u64,
                inviter: r.get::<_, i64>(1) as u64,
                created_ms: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn take_invitation(&self, user: u64, group: u64) -> Result<Option<Invitation>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "DELETE FROM invitations WHERE user_id = $1 AND group_id = $2
                 RETURNING group_id, inviter, created_ms",
                &[&(user as i64), &(group as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| Invitation {
            group_id: r.get::<_, i64>(0) as u64,
            inviter: r.get::<_, i64>(1) as u64,
            created_ms: r.get::<_, i64>(2) as u64,
        }))
    }

    async fn bans(&self, group: u64, after: u64, limit: usize) -> Result<Vec<Ban>> {
        let rows = self
            .group_page("user_id, by_user, at_ms", "group_bans", group, after, limit)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ban {
                user_id: r.get::<_, i64>(0) as u64,
                by_user: r.get::<_, i64>(1) as u64,
                at_ms: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn banned(&self, group: u64, user: u64) -> Result<bool> {
        Ok(self
            .reader()
            .await?
            .query_opt(
                "SELECT 1 FROM group_bans WHERE group_id = $1 AND user_id = $2",
                &[&(group as i64), &(user as i64)],
            )
            .await
            .map_err(pg)?
            .is_some())
    }

    async fn request_join(
        &self,
        group: u64,
        user: u64,
        message: &str,
        now_ms: u64,
    ) -> Result<bool> {
        validate_join_request(message)?;
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let gid = group as i64;
        // A group's requests change one at a time (the cap counts them).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&(gid ^ 0x6a6f_696e_7271)],
        )
        .await
        .map_err(pg)?;
        let new = tx
            .query_opt(
                "SELECT 1 FROM join_requests WHERE group_id = $1 AND user_id = $2",
                &[&gid, &(user as i64)],
            )
            .await
            .map_err(pg)?
            .is_none();
        tx.execute(
            "INSERT INTO join_requests (group_id, user_id, message, created_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (group_id, user_id) DO UPDATE SET
               message = EXCLUDED.message, created_ms = EXCLUDED.created_ms",
            &[&gid, &(user as i64), &message, &(now_ms as i64)],
        )
        .await
        .map_err(pg)?;
        // Past the cap the oldest gives way.
        tx.execute(
            "DELETE FROM join_requests WHERE group_id = $1 AND user_id IN (
                SELECT user_id FROM join_requests WHERE group_id = $1
                ORDER BY created_ms, user_id
                LIMIT GREATEST((SELECT count(*) FROM join_requests WHERE group_id = $1) - $2, 0))",
            &[&gid, &(MAX_PENDING_JOIN_REQUESTS as i64)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    async fn join_requests(
        &self,
        group: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JoinRequest>> {
        let rows = self
            .group_page(
                "user_id, message, created_ms",
                "join_requests",
                group,
                after,
                limit,
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| JoinRequest {
                group_id: group,
                user_id: r.get::<_, i64>(0) as u64,
                message: r.get(1),
                created_ms: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    async fn take_join_request(&self, group: u64, user: u64) -> Result<Option<JoinRequest>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "DELETE FROM join_requests WHERE group_id = $1 AND user_id = $2
                 RETURNING message, created_ms",
                &[&(group as i64), &(user as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| JoinRequest {
            group_id: group,
            user_id: user,
            message: r.get(0),
            created_ms: r.get::<_, i64>(1) as u64,
        }))
    }
}
