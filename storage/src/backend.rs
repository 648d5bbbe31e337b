//! What a storage backend provides, in domain terms: the capability traits the
//! gateway calls, and [`Storage`], all of them together.
//!
//! Every method that may wait on a disk or a network is async; a backend runs its
//! blocking work (fsyncs, password hashing) off the caller's async workers itself.
//! Errors are [`StorageError`]s, whatever the backend. The rules (relation
//! transitions, group membership and roles, which relations a list holds) live in
//! `relation_rules`, `group_rules` and the types these traits take, so a second
//! backend reuses them rather than writing them again. The embedded sled store
//! ([`Store`](crate::Store)) is one backend; `sled_backend` maps these traits onto it.
//!
//! What is acknowledged is durable: an append's ticket resolves, and a write method
//! returns, only once what it did survives a crash, whole or not at all.

use async_trait::async_trait;
use courier_protocol::ConversationId;

use crate::error::Result;
use crate::{
    Account, AppendRequest, AppendTicket, Appended, Ban, BlobRecord, BlobUpdate, Bound,
    CommitStats, ConversationState, Device, EventsFor, GroupChange, GroupChanged, GroupInfo,
    HiddenView, HistoryPage, HistoryRange, Invitation, JoinPolicy, JoinRequest, Member,
    MembershipRefusal, PushToken, Reacted, ReactionChange, ReactionCount, ReactionEventFn,
    Relation, RelationChange, RelationRefusal, RelationSet, RequestOutcome, Session, StoredMessage,
    TokenHash, TokenInfo, UserConversation,
};

/// Conversation logs: appends in seq order, history, single messages.
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Queues an append (or a recall event, see [`AppendRequest::recalls`]) and
    /// returns a ticket for its outcome. Waits while the backend's queue is full
    /// (the back pressure that reaches a sender). Appends submitted one after
    /// another from one task get increasing seqs in their conversation, even when
    /// their tickets are awaited concurrently.
    async fn submit(&self, req: AppendRequest) -> Result<AppendTicket>;

    /// Appends and waits until the message is durable.
    async fn append(&self, req: AppendRequest) -> Result<Appended> {
        self.submit(req).await?.wait().await
    }

    /// A page of `c`'s history in `range`, at most `limit` messages.
    async fn history(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage>;

    /// Like [`MessageLog::history`], but only messages with a seq above `floor`
    /// (what a member who joined later, or retention, leaves visible).
    async fn history_above(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
        floor: u64,
    ) -> Result<HistoryPage>;

    /// Message `seq` of `c`, if stored.
    async fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>>;

    /// The highest seq stored in `c` (0 when empty).
    async fn last_seq(&self, c: &ConversationId) -> Result<u64>;

    /// Whether `user` has ever written to `c`.
    async fn has_sent(&self, c: &ConversationId, user: u64) -> Result<bool>;

    /// The lowest seq of `c` that retention has not pruned (1 when nothing was).
    async fn first_retained_seq(&self, c: &ConversationId) -> Result<u64>;
}

/// Pruning old history.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Every conversation with its last seq.
    async fn all_conversations(&self) -> Result<Vec<(ConversationId, u64)>>;

    /// The first seq of `c` stored at or after `time_ms`, if any.
    async fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Result<Option<u64>>;

    /// Deletes `c`'s messages below `keep_from`; returns how many were deleted.
    async fn prune_history(&self, c: &ConversationId, keep_from: u64) -> Result<usize>;

    /// Frees the space of what retention deleted, where a backend frees it apart
    /// from the deletion (the embedded store deletes whole log segments once every
    /// message in them is gone). Returns the bytes freed.
    async fn reclaim(&self) -> Result<u64>;
}

/// The per-user conversation index: which conversations a user is in, read and
/// delivery cursors, mute and pin.
#[async_trait]
pub trait ConversationIndex: Send + Sync {
    /// `user`'s conversations, most recently active first.
    async fn conversations(&self, user: u64) -> Result<Vec<UserConversation>>;

    /// `user`'s state in `c`, if `user` is in it.
    async fn conversation_state(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<Option<ConversationState>>;

    /// Moves `user`'s read cursor in `c` forward to `seq` (never back); durable once
    /// it returns; returns the cursor.
    async fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64>;

    /// Moves `user`'s delivery cursor in `c` forward to `seq` (a hint for unread
    /// counts; not made durable on its own); returns the cursor.
    async fn note_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64>;

    /// Sets mute and pin of `user` in `c` (`None` leaves one as it is); durable once
    /// it returns.
    async fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<ConversationState>;

    /// How many of `c`'s messages above `after` mention `user` by name or everyone
    /// (recalled ones not counted).
    async fn mention_count(&self, c: &ConversationId, user: u64, after: u64) -> Result<u64>;

    /// How many of `c`'s events above `after` count in nobody's unread number: edit
    /// and reaction events, which change other messages rather than say something.
    async fn quiet_count(&self, c: &ConversationId, after: u64) -> Result<u64>;

    /// Hides messages `seqs` of `c` from `user` alone (at most
    /// [`crate::MAX_HIDE_AT_ONCE`]); durable once it returns.
    async fn hide_messages(&self, user: u64, c: &ConversationId, seqs: &[u64]) -> Result<()>;

    /// Clears `c` for `user` alone through `seq`; returns the cleared seq in force
    /// (it only moves up).
    async fn clear_history(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64>;

    /// What `user` cleared of `c`, and the newest `limit` messages above it that
    /// it hid.
    async fn hidden_view(&self, user: u64, c: &ConversationId, limit: usize) -> Result<HiddenView>;

    /// `user`'s latest view version, and the conversations whose view (hidden or
    /// cleared) it changed after version `after`.
    async fn views_changed_since(
        &self,
        user: u64,
        after: u64,
    ) -> Result<(u64, Vec<ConversationId>)>;
}

/// User accounts and passwords. Hashing is the backend's blocking work.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates an account; durable once it returns.
    async fn register(&self, name: &str, password: &str) -> Result<Account>;

    /// Checks the password and issues a login token.
    async fn login(&self, name: &str, password: &str) -> Result<Session>;

    /// Checks `current` against `name`'s password, sets `new`, and revokes every
    /// token of the user but `keep`; returns the revoked tokens.
    async fn change_password(
        &self,
        name: &str,
        current: &str,
        new: &str,
        keep: &TokenHash,
    ) -> Result<Vec<TokenHash>>;

    /// The account with id `id`.
    async fn account(&self, id: u64) -> Result<Option<Account>>;

    /// The account called `name` (case-insensitively).
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>>;

    /// The account of a user whom the application vouches for (a verified token of
    /// its own names them), created on first use. It has no password: a password
    /// login to it fails like a wrong password. `NameTaken` when `name` belongs to a
    /// password account (an application token never takes one over).
    async fn external_account(&self, name: &str) -> Result<Account>;

    /// Bans (`true`) or unbans `user`; durable once it returns; an error when
    /// there is no such account (`InvalidArgument`). The caller ends its sessions and revokes its tokens.
    async fn set_banned(&self, user: u64, banned: bool) -> Result<()>;

    /// Whether `user` is banned.
    async fn is_banned(&self, user: u64) -> Result<bool>;

    /// Sets (or with `None` clears) `user`'s display name (see
    /// [`crate::credentials::valid_display_name`]); durable once it returns.
    async fn set_display_name(&self, user: u64, name: Option<&str>) -> Result<()>;

    /// `user`'s display name, if set.
    async fn display_name(&self, user: u64) -> Result<Option<String>>;

    /// Sets `user`'s profile (checked by [`crate::Profile::validate`]), durably.
    async fn set_profile(&self, user: u64, profile: &crate::Profile) -> Result<()>;

    /// `user`'s profile (the default when it never set one).
    async fn profile(&self, user: u64) -> Result<crate::Profile>;

    /// Users whose display name starts with `prefix` (case-insensitive), in order
    /// of (lowercased display name, id), after `after` (a previous page's last
    /// lowercased name and id), at most `limit`; with their display names.
    async fn search_display_names(
        &self,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>>;
}

/// Login tokens (stored by hash only).
#[async_trait]
pub trait Tokens: Send + Sync {
    /// What `token` says, if it is known and unexpired.
    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>>;

    /// What the token with hash `hash` says, if it is known and unexpired.
    async fn token_info_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenInfo>>;

    /// Issues a new token for `user` (an operator minting one; logins do this
    /// after checking the password); durable once it returns.
    async fn issue_token(&self, user: u64) -> Result<Session>;

    /// Revokes one token; whether it existed.
    async fn revoke_token_hash(&self, hash: &TokenHash) -> Result<bool>;

    /// Revokes every token of `user` but `keep`; returns those revoked.
    async fn revoke_user_tokens(
        &self,
        user: u64,
        keep: Option<&TokenHash>,
    ) -> Result<Vec<TokenHash>>;

    /// Deletes tokens expired at `now_ms`; returns how many.
    async fn sweep_expired_tokens(&self, now_ms: u64) -> Result<usize>;
}

/// The devices a user has signed in from.
#[async_trait]
pub trait Devices: Send + Sync {
    /// `user`'s devices.
    async fn devices(&self, user: u64) -> Result<Vec<Device>>;

    /// Records that `user` uses `device_id` (with `token`, which removing the device
    /// revokes); durable once it returns.
    async fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>,
    ) -> Result<Bound>;

    /// Removes a device; returns it (with the tokens it was used with) if it existed.
    /// Its tokens stay valid (a device evicted by the device cap).
    async fn unbind_device(&self, user: u64, device_id: &str) -> Result<Option<Device>>;

    /// Removes a device and revokes every token it was used with (a lost phone);
    /// returns it if it existed.
    async fn remove_device(&self, user: u64, device_id: &str) -> Result<Option<Device>>;

    /// Sets (`Some`) or clears (`None`) a bound device's push registration, durably;
    /// with `replacing`, only while its registration is that token. Returns whether
    /// the device exists (and, with `replacing`, held that token).
    async fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>,
    ) -> Result<bool>;
}

/// Friendships, follows and blocks, applied by the rules of
/// [`RelationChange::apply`] to both sides of a pair at once.
#[async_trait]
pub trait Relations: Send + Sync {
    /// `user`'s view of `peer`.
    async fn relation(&self, user: u64, peer: u64) -> Result<Relation>;

    /// Up to `limit` peers of `user` in `set` (after peer id `after`), by peer id.
    async fn relations(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        set: RelationSet,
    ) -> Result<Vec<(u64, Relation)>>;

    /// Applies `change`, made by `user` toward `peer`; durable once it returns. A
    /// friend request answers whether it made them friends.
    async fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange,
    ) -> Result<std::result::Result<Option<RequestOutcome>, RelationRefusal>>;

    /// Makes `user` friends with each of `peers` (an administrative import; pairs
    /// where either blocks the other are skipped); returns how many are friends now.
    async fn befriend_many(&self, user: u64, peers: &[u64]) -> Result<usize>;
}

/// Groups, their members and roles, and invitations.
#[async_trait]
pub trait Groups: Send + Sync {
    /// The group's settings.
    async fn group(&self, id: u64) -> Result<Option<GroupInfo>>;

    /// `user`'s membership of group `id`.
    async fn member(&self, id: u64, user: u64) -> Result<Option<Member>>;

    /// A page of members after user id `after`.
    async fn members(&self, id: u64, after: u64, limit: usize) -> Result<Vec<Member>>;

    /// Every member with the seq it receives messages from, by user id.
    async fn member_ids(&self, id: u64) -> Result<Vec<(u64, u64)>>;

    /// Creates a group owned by `owner` with `members`, and stores the events that
    /// `events` writes for it in the same durable step.
    async fn create_group(
        &self,
        owner: u64,
        name: &str,
        join_policy: JoinPolicy,
        history_visible: bool,
        members: &[u64],
        events: EventsFor,
    ) -> Result<GroupChanged>;

    /// Applies `change` by the rules of `group_rules`, in order with the group's
    /// messages, with its events in the same durable step; or says why not.
    async fn change_group(
        &self,
        id: u64,
        change: GroupChange,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>>;

    /// Invites `user` to `group`; false when an invitation was pending already.
    async fn invite(&self, user: u64, group: u64, inviter: u64, now_ms: u64) -> Result<bool>;

    /// `user`'s pending invitations.
    async fn invitations(&self, user: u64) -> Result<Vec<Invitation>>;

    /// Removes and returns `user`'s invitation to `group`.
    async fn take_invitation(&self, user: u64, group: u64) -> Result<Option<Invitation>>;

    /// `group`'s bans in user order, after user `after`, at most `limit`.
    async fn bans(&self, group: u64, after: u64, limit: usize) -> Result<Vec<Ban>>;

    /// Whether `user` is banned from `group` now (the store checks additions
    /// itself, in log order; this is for answering early).
    async fn banned(&self, group: u64, user: u64) -> Result<bool>;

    /// Records `user`'s request to join `group` (replacing a pending one, the
    /// oldest of a full list giving way); true when there was none.
    async fn request_join(&self, group: u64, user: u64, message: &str, now_ms: u64)
        -> Result<bool>;

    /// `group`'s pending join requests in user order, after user `after`.
    async fn join_requests(&self, group: u64, after: u64, limit: usize)
        -> Result<Vec<JoinRequest>>;

    /// Removes and returns `user`'s request to join `group`.
    async fn take_join_request(&self, group: u64, user: u64) -> Result<Option<JoinRequest>>;
}

/// Metadata of uploaded media (the bytes live in the gateway's blob store).
#[async_trait]
pub trait MediaRecords: Send + Sync {
    /// The record of blob `sha256`.
    async fn blob(&self, sha256: &str) -> Result<Option<BlobRecord>>;

    /// Stores `record` unless one exists; returns the stored record.
    async fn put_blob(&self, record: &BlobRecord) -> Result<BlobRecord>;

    /// Records that `user` uploaded the blob (may link to it).
    async fn add_blob_owner(&self, sha256: &str, user: u64) -> Result<()>;

    /// Whether `user` uploaded the blob.
    async fn is_blob_owner(&self, sha256: &str, user: u64) -> Result<bool>;

    /// Applies `update`; returns the new record, if the blob exists.
    async fn update_blob(&self, sha256: &str, update: BlobUpdate) -> Result<Option<BlobRecord>>;

    /// Every blob record (for garbage collection).
    async fn blobs(&self) -> Result<Vec<BlobRecord>>;

    /// Forgets a blob and its owners.
    async fn delete_blob(&self, sha256: &str) -> Result<()>;
}

/// Reactions to messages (see `reactions`).
#[async_trait]
pub trait Reactions: Send + Sync {
    /// Applies `changes` to `c`'s reactions and stores the event `event` builds
    /// from those that took effect, in one commit, in order with the
    /// conversation's messages (no event when none took effect).
    async fn react(
        &self,
        c: &ConversationId,
        changes: Vec<ReactionChange>,
        event: ReactionEventFn,
    ) -> Result<Reacted>;

    /// The reactions of `c`'s messages `from..=to`, counted per message and emoji
    /// (ascending), each saying whether `viewer` is among them.
    async fn reaction_counts(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
        viewer: u64,
    ) -> Result<Vec<ReactionCount>>;

    /// The different reactions message `seq` has (each once, at most `limit`), read
    /// without counting who reacted: the kinds limit is checked with it.
    async fn reaction_kinds(
        &self,
        c: &ConversationId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Who reacted to message `seq` with `emoji`: user ids above `after`,
    /// ascending, at most `limit`, each with when (ms).
    async fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>>;
}

/// The backend's own state, for health checks, metrics and shutdown.
#[async_trait]
pub trait Operations: Send + Sync {
    /// Whether the backend can write now (no durable write is failing).
    fn writable(&self) -> bool;

    /// Appends waiting to be written.
    fn queued(&self) -> usize;

    /// Commit counters and histograms.
    fn commit_stats(&self) -> &CommitStats;

    /// Finishes what is queued and makes everything durable; later writes fail
    /// with `ShuttingDown`. Calling it twice is harmless.
    async fn shutdown(&self) -> Result<()>;
}

/// Everything the gateway needs of a storage backend.
pub trait Storage:
    MessageLog
    + Retention
    + ConversationIndex
    + Accounts
    + Tokens
    + Devices
    + Relations
    + Groups
    + MediaRecords
    + Reactions
    + Operations
    + 'static
{
}

impl<T> Storage for T where
    T: MessageLog
        + Retention
        + ConversationIndex
        + Accounts
        + Tokens
        + Devices
        + Relations
        + Groups
        + MediaRecords
        + Reactions
        + Operations
        + 'static
{
}
