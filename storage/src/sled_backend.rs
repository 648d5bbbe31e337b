//! The embedded store as a backend: the capability traits of `backend` mapped onto
//! [`Store`]'s methods.
//!
//! Point reads and short scans run inline: they are served from sled's page cache,
//! as the commit log's writers left it; whole-store scans run off the worker. Anything that fsyncs, hashes a password or waits for a writer
//! thread by blocking runs on tokio's blocking pool, never on the caller's async
//! worker. Appends, read cursors, flags and group changes wait for their writer
//! asynchronously and need neither.

use async_trait::async_trait;
use courier_protocol::ConversationId;

use crate::backend::{
    Accounts, ConversationIndex, Devices, Groups, MediaRecords, MessageLog, Operations, Reactions,
    Relations, Retention, Tokens,
};
use crate::error::{Result, StorageError};
use crate::{
    Account, AppendRequest, AppendTicket, Ban, BlobRecord, BlobUpdate, Bound, CommitStats,
    ConversationState, Device, EventsFor, GroupChange, GroupChanged, GroupInfo, HistoryPage,
    HistoryRange, Invitation, JoinPolicy, JoinRequest, Member, MembershipRefusal, PushToken,
    Relation, RelationChange, RelationRefusal, RelationSet, RequestOutcome, Session, Store,
    StoredMessage, TokenHash, TokenInfo, UserConversation,
};

impl Store {
    /// Runs `f` on the blocking pool with a handle to this store.
    async fn off_worker<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic())
                }
                StorageError::ShuttingDown
            })?
    }
}

#[async_trait]
impl MessageLog for Store {
    async fn submit(&self, req: AppendRequest) -> Result<AppendTicket> {
        Store::submit(self, req).await
    }

    async fn history(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage> {
        Store::history(self, c, range, limit)
    }

    async fn history_above(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
        floor: u64,
    ) -> Result<HistoryPage> {
        Store::history_above(self, c, range, limit, floor)
    }

    async fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>> {
        Store::message(self, c, seq)
    }

    async fn last_seq(&self, c: &ConversationId) -> Result<u64> {
        Store::last_seq(self, c)
    }

    async fn has_sent(&self, c: &ConversationId, user: u64) -> Result<bool> {
        Store::has_sent(self, c, user)
    }

    async fn first_retained_seq(&self, c: &ConversationId) -> Result<u64> {
        Store::first_retained_seq(self, c)
    }
}

#[async_trait]
impl Retention for Store {
    async fn all_conversations(&self) -> Result<Vec<(ConversationId, u64)>> {
        self.off_worker(|s| s.all_conversations()).await
    }

    async fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Result<Option<u64>> {
        let c = *c;
        self.off_worker(move |s| s.first_seq_since(&c, time_ms))
            .await
    }

    async fn prune_history(&self, c: &ConversationId, keep_from: u64) -> Result<usize> {
        let c = *c;
        self.off_worker(move |s| s.prune_history(&c, keep_from))
            .await
    }

    async fn reclaim(&self) -> Result<u64> {
        self.off_worker(|s| s.reclaim()).await
    }
}

#[async_trait]
impl ConversationIndex for Store {
    async fn conversations(&self, user: u64) -> Result<Vec<UserConversation>> {
        Store::conversations(self, user)
    }

    async fn conversation_state(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<Option<ConversationState>> {
        Store::conversation_state(self, user, c)
    }

    async fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        Store::mark_read(self, user, c, seq).await
    }

    async fn note_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        Store::note_delivered(self, user, c, seq)
    }

    async fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<ConversationState> {
        Store::set_conversation_flags(self, user, c, muted, pinned).await
    }

    async fn mention_count(&self, c: &ConversationId, user: u64, after: u64) -> Result<u64> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        crate::segments::mention_count(log, c, user, after)
    }

    async fn quiet_count(&self, c: &ConversationId, after: u64) -> Result<u64> {
        let log = &self.shard(self.inner.map.conversation(c)).log;
        crate::segments::quiet_count(log, c, after)
    }

    async fn hide_messages(&self, user: u64, c: &ConversationId, seqs: &[u64]) -> Result<()> {
        Store::hide_messages(self, user, c, seqs).await
    }

    async fn clear_history(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        Store::clear_history(self, user, c, seq).await
    }

    async fn hidden_view(
        &self,
        user: u64,
        c: &ConversationId,
        limit: usize,
    ) -> Result<crate::HiddenView> {
        Store::hidden_view(self, user, c, limit)
    }

    async fn views_changed_since(
        &self,
        user: u64,
        after: u64,
    ) -> Result<(u64, Vec<ConversationId>)> {
        Store::views_changed_since(self, user, after)
    }
}

#[async_trait]
impl Accounts for Store {
    async fn register(&self, name: &str, password: &str) -> Result<Account> {
        let (name, password) = (name.to_owned(), password.to_owned());
        self.off_worker(move |s| s.register(&name, &password)).await
    }

    async fn login(&self, name: &str, password: &str) -> Result<Session> {
        let (name, password) = (name.to_owned(), password.to_owned());
        self.off_worker(move |s| s.login(&name, &password)).await
    }

    async fn change_password(
        &self,
        name: &str,
        current: &str,
        new: &str,
        keep: &TokenHash,
    ) -> Result<Vec<TokenHash>> {
        let (name, current, new, keep) =
            (name.to_owned(), current.to_owned(), new.to_owned(), *keep);
        self.off_worker(move |s| {
            let account = s.check_password(&name, &current)?;
            s.set_password(account.id, &new)?;
            s.revoke_user_tokens(account.id, Some(&keep))
        })
        .await
    }

    async fn account(&self, id: u64) -> Result<Option<Account>> {
        Store::account(self, id)
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        Store::account_by_name(self, name)
    }

    async fn external_account(&self, name: &str) -> Result<Account> {
        let name = name.to_owned();
        self.off_worker(move |s| s.external_account(&name)).await
    }

    async fn set_banned(&self, user: u64, banned: bool) -> Result<()> {
        self.off_worker(move |s| s.set_banned(user, banned)).await
    }

    async fn is_banned(&self, user: u64) -> Result<bool> {
        Store::is_banned(self, user)
    }

    async fn set_display_name(&self, user: u64, name: Option<&str>) -> Result<()> {
        let name = name.map(str::to_owned);
        self.off_worker(move |s| s.set_display_name(user, name.as_deref()))
            .await
    }

    async fn display_name(&self, user: u64) -> Result<Option<String>> {
        Store::display_name(self, user)
    }

    async fn set_profile(&self, user: u64, profile: &crate::Profile) -> Result<()> {
        let profile = profile.clone();
        self.off_worker(move |s| s.set_profile(user, &profile))
            .await
    }

    async fn profile(&self, user: u64) -> Result<crate::Profile> {
        Store::profile(self, user)
    }

    async fn search_display_names(
        &self,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>> {
        Store::search_display_names(self, prefix, after, limit)
    }
}

#[async_trait]
impl Tokens for Store {
    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>> {
        Store::token_info(self, token)
    }

    async fn issue_token(&self, user: u64) -> Result<Session> {
        self.off_worker(move |s| s.issue_token(user)).await
    }

    async fn token_info_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenInfo>> {
        Store::token_info_by_hash(self, hash)
    }

    async fn revoke_token_hash(&self, hash: &TokenHash) -> Result<bool> {
        let hash = *hash;
        self.off_worker(move |s| s.revoke_token_hash(&hash)).await
    }

    async fn revoke_user_tokens(
        &self,
        user: u64,
        keep: Option<&TokenHash>,
    ) -> Result<Vec<TokenHash>> {
        let keep = keep.copied();
        self.off_worker(move |s| s.revoke_user_tokens(user, keep.as_ref()))
            .await
    }

    async fn sweep_expired_tokens(&self, now_ms: u64) -> Result<usize> {
        self.off_worker(move |s| s.sweep_expired_tokens(now_ms))
            .await
    }
}

#[async_trait]
impl Devices for Store {
    async fn devices(&self, user: u64) -> Result<Vec<Device>> {
        Store::devices(self, user)
    }

    async fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>,
    ) -> Result<Bound> {
        Store::bind_device(self, user, device_id, platform, now_ms, token).await
    }

    async fn unbind_device(&self, user: u64, device_id: &str) -> Result<Option<Device>> {
        let device_id = device_id.to_owned();
        self.off_worker(move |s| s.unbind_device(user, &device_id))
            .await
    }

    async fn remove_device(&self, user: u64, device_id: &str) -> Result<Option<Device>> {
        let device_id = device_id.to_owned();
        self.off_worker(move |s| {
            let removed = s.unbind_device(user, &device_id)?;
            for token in removed.iter().flat_map(|d| &d.tokens) {
                s.revoke_token_hash(token)?;
            }
            Ok(removed)
        })
        .await
    }

    async fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>,
    ) -> Result<bool> {
        Store::set_push_token(self, user, device_id, push, replacing).await
    }
}

#[async_trait]
impl Relations for Store {
    async fn relation(&self, user: u64, peer: u64) -> Result<Relation> {
        Store::relation(self, user, peer)
    }

    async fn relations(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        set: RelationSet,
    ) -> Result<Vec<(u64, Relation)>> {
        Store::relations(self, user, after, limit, |r| set.contains(r))
    }

    async fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange,
    ) -> Result<std::result::Result<Option<RequestOutcome>, RelationRefusal>> {
        self.off_worker(move |s| s.change_relation(user, peer, change))
            .await
    }

    async fn befriend_many(&self, user: u64, peers: &[u64]) -> Result<usize> {
        let peers = peers.to_vec();
        self.off_worker(move |s| s.befriend_many(user, &peers))
            .await
    }
}

#[async_trait]
impl Groups for Store {
    async fn group(&self, id: u64) -> Result<Option<GroupInfo>> {
        Store::group(self, id)
    }

    async fn member(&self, id: u64, user: u64) -> Result<Option<Member>> {
        Store::member(self, id, user)
    }

    async fn members(&self, id: u64, after: u64, limit: usize) -> Result<Vec<Member>> {
        Store::members(self, id, after, limit)
    }

    async fn member_ids(&self, id: u64) -> Result<Vec<(u64, u64)>> {
        Store::member_ids(self, id)
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
        Store::create_group(
            self,
            owner,
            name,
            join_policy,
            history_visible,
            members,
            events,
        )
        .await
    }

    async fn change_group(
        &self,
        id: u64,
        change: GroupChange,
        events: EventsFor,
    ) -> Result<std::result::Result<GroupChanged, MembershipRefusal>> {
        Store::change_group(self, id, change, events).await
    }

    async fn invite(&self, user: u64, group: u64, inviter: u64, now_ms: u64) -> Result<bool> {
        self.off_worker(move |s| s.invite(user, group, inviter, now_ms))
            .await
    }

    async fn invitations(&self, user: u64) -> Result<Vec<Invitation>> {
        Store::invitations(self, user)
    }

    async fn take_invitation(&self, user: u64, group: u64) -> Result<Option<Invitation>> {
        self.off_worker(move |s| s.take_invitation(user, group))
            .await
    }

    async fn bans(&self, group: u64, after: u64, limit: usize) -> Result<Vec<Ban>> {
        Store::bans(self, group, after, limit)
    }

    async fn banned(&self, group: u64, user: u64) -> Result<bool> {
        Store::banned(self, group, user)
    }

    async fn request_join(
        &self,
        group: u64,
        user: u64,
        message: &str,
        now_ms: u64,
    ) -> Result<bool> {
        let message = message.to_owned();
        self.off_worker(move |s| s.request_join(group, user, &message, now_ms))
            .await
    }

    async fn join_requests(
        &self,
        group: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<JoinRequest>> {
        Store::join_requests(self, group, after, limit)
    }

    async fn take_join_request(&self, group: u64, user: u64) -> Result<Option<JoinRequest>> {
        self.off_worker(move |s| s.take_join_request(group, user))
            .await
    }
}

#[async_trait]
impl MediaRecords for Store {
    async fn blob(&self, sha256: &str) -> Result<Option<BlobRecord>> {
        Store::blob(self, sha256)
    }

    async fn put_blob(&self, record: &BlobRecord) -> Result<BlobRecord> {
        let record = record.clone();
        self.off_worker(move |s| s.put_blob(&record)).await
    }

    async fn add_blob_owner(&self, sha256: &str, user: u64) -> Result<()> {
        let sha256 = sha256.to_owned();
        self.off_worker(move |s| s.add_blob_owner(&sha256, user))
            .await
    }

    async fn is_blob_owner(&self, sha256: &str, user: u64) -> Result<bool> {
        Store::is_blob_owner(self, sha256, user)
    }

    async fn update_blob(&self, sha256: &str, update: BlobUpdate) -> Result<Option<BlobRecord>> {
        let sha256 = sha256.to_owned();
        self.off_worker(move |s| s.update_blob(&sha256, |r| update.apply(r)))
            .await
    }

    async fn blobs(&self) -> Result<Vec<BlobRecord>> {
        self.off_worker(|s| s.blobs()).await
    }

    async fn delete_blob(&self, sha256: &str) -> Result<()> {
        let sha256 = sha256.to_owned();
        self.off_worker(move |s| s.delete_blob(&sha256)).await
    }
}

#[async_trait]
impl Operations for Store {
    fn writable(&self) -> bool {
        Store::writable(self)
    }

    fn queued(&self) -> usize {
        Store::queued(self)
    }

    fn commit_stats(&self) -> &CommitStats {
        Store::commit_stats(self)
    }

    async fn shutdown(&self) -> Result<()> {
        self.off_worker(|s| s.shutdown()).await
    }
}

#[async_trait]
impl Reactions for Store {
    async fn react(
        &self,
        c: &ConversationId,
        changes: Vec<crate::ReactionChange>,
        event: crate::ReactionEventFn,
    ) -> Result<crate::Reacted> {
        Store::react(self, c, changes, event).await
    }

    async fn reaction_counts(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
        viewer: u64,
    ) -> Result<Vec<crate::ReactionCount>> {
        Store::reaction_counts(self, c, from, to, viewer)
    }

    async fn reaction_kinds(
        &self,
        c: &ConversationId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        Store::reaction_kinds(self, c, seq, limit)
    }

    async fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>> {
        Store::reactors(self, c, seq, emoji, after, limit)
    }
}
