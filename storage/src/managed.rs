//! The embedded backend as a server runs it: a [`Store`] that reopens itself after
//! its indexes failed a write.
//!
//! sled takes no writes once one failed (a full or failing disk), and a store whose
//! indexes lag its commit log must not append to the log either. So the store
//! refuses writes from then on ([`StorageError::Unavailable`], which clients retry)
//! while it keeps serving reads, and a healer thread checks every
//! [`StoreConfig::reopen_check_interval`] whether the disk takes writes again (a
//! probe file written and synced); once it does, the store is shut down and opened
//! again: the indexes as sled last made them durable, with the commit logs replayed
//! on top, so nothing acknowledged is missing. Calls made while it reopens are
//! answered `Unavailable`. A start on a full disk is the same state: the server
//! comes up, answers `Unavailable`, and opens the store once it can.
//!
//! Counters ([`CommitStats`]) live here, across reopens.

use std::io::Write as _;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_protocol::ConversationId;

use crate::backend::{
    Accounts, ConversationIndex, Devices, Groups, MediaRecords, MessageLog, Operations, Reactions,
    Relations, Retention, Tokens,
};
use crate::error::{Result, StorageError};
use crate::{
    Account, AppendRequest, AppendTicket, Ban, BlobRecord, BlobUpdate, Bound, CommitListener,
    CommitStats, ConversationState, Device, EventsFor, GroupChange, GroupChanged, GroupInfo,
    HistoryPage, HistoryRange, Invitation, JoinPolicy, JoinRequest, Member, MembershipRefusal,
    PushToken, Reacted, ReactionChange, ReactionCount, ReactionEventFn, Relation, RelationChange,
    RelationRefusal, RelationSet, RequestOutcome, Session, Store, StoreConfig, StoredMessage,
    TokenHash, TokenInfo, UserConversation,
};

/// Bytes the healer writes and syncs to decide that the disk takes writes again.
const PROBE_BYTES: usize = 1 << 20;
const PROBE_FILE: &str = ".courier-space-probe";
/// How long a reopen waits for the last handle to the failed indexes to go.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A [`Store`] that reopens itself after its indexes failed a write (see the module
/// docs). Implements every storage trait.
pub struct ManagedStore {
    shared: Arc<Shared>,
    healer: Mutex<Option<Healer>>,
}

struct Shared {
    config: StoreConfig,
    /// Taken at shutdown: the listener usually holds the store (through the
    /// gateway's caches), and the store must be free to go.
    listener: Mutex<Option<Arc<dyn CommitListener>>>,
    stats: Arc<CommitStats>,
    /// `None` while the store is closed for a reopen (or could not open yet).
    current: RwLock<Option<Store>>,
    reopened: tokio::sync::watch::Sender<u64>,
}

struct Healer {
    stop: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl ManagedStore {
    /// Opens the store in `config.data_dir` (see [`Store::open`]). A disk that takes
    /// no writes is not an error: the store opens later, by itself.
    pub fn open(config: StoreConfig, listener: Option<Arc<dyn CommitListener>>) -> Result<Self> {
        let stats = Arc::new(CommitStats::default());
        let current = match Store::open_with_stats(config.clone(), listener.clone(), stats.clone())
        {
            Ok(store) => Some(store),
            Err(e) if e.is_out_of_space() => {
                stats.note_indexes_failed(&e);
                None
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            config,
            listener: Mutex::new(listener),
            stats,
            current: RwLock::new(current),
            reopened: tokio::sync::watch::Sender::new(0),
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            let every = shared.config.reopen_check_interval;
            std::thread::Builder::new()
                .name("courier-store-healer".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(every)
                    {
                        shared.heal();
                    }
                })?
        };
        Ok(Self {
            shared,
            healer: Mutex::new(Some(Healer { stop, thread })),
        })
    }

    /// How many times the store has reopened after its indexes failed; changes
    /// each time it reopens.
    pub fn reopens(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.reopened.subscribe()
    }

    fn store(&self) -> Result<Store> {
        self.shared
            .current
            .read()
            .expect("store slot")
            .clone()
            .ok_or(StorageError::Unavailable(
                "the store is reopening after its disk failed a write",
            ))
    }
}

impl Shared {
    /// One check of the healer: if the indexes failed and the disk takes writes
    /// again, reopen.
    fn heal(&self) {
        let failed = match &*self.current.read().expect("store slot") {
            Some(store) => store.indexes_failed(),
            None => true,
        };
        if !failed {
            return;
        }
        if let Err(e) = probe_space(&self.config.data_dir) {
            tracing::debug!(error = %e, "the disk takes no writes yet");
            return;
        }
        let old = self.current.write().expect("store slot").take();
        if let Some(old) = old {
            let indexes = old.indexes_weak();
            // The final flush fails (that is why we are here); the logs stay.
            if let Err(e) = old.shutdown() {
                tracing::debug!(error = %e, "the failed store's final flush");
            }
            drop(old);
            // Calls in flight hold handles for a moment; sled's lock goes with the last.
            let deadline = Instant::now() + RELEASE_WAIT;
            while indexes.strong_count() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let listener = self.listener.lock().expect("listener").clone();
        match Store::open_with_stats(self.config.clone(), listener.clone(), self.stats.clone()) {
            Ok(store) => {
                let healthy = !store.indexes_failed();
                *self.current.write().expect("store slot") = Some(store);
                if healthy {
                    self.stats
                        .reopens
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!("store reopened after its indexes failed: writes resume");
                    if let Some(listener) = &listener {
                        listener.reopened();
                    }
                    self.reopened.send_modify(|n| *n += 1);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reopen the store yet"),
        }
    }
}

/// Writes, syncs and removes a probe file: whether the disk takes writes.
fn probe_space(dir: &std::path::Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    written
}

/// Implements a storage trait by calling the current store's.
macro_rules! delegate {
    ($trait:ident { $( fn $name:ident(&self $(, $arg:ident : $ty:ty)* ) -> $ret:ty; )* }) => {
        #[async_trait]
        impl $trait for ManagedStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    let store = self.store()?;
                    <Store as $trait>::$name(&store $(, $arg)*).await
                }
            )*
        }
    };
}

delegate!(MessageLog {
    fn submit(&self, req: AppendRequest) -> AppendTicket;
    fn history(&self, c: &ConversationId, range: HistoryRange, limit: usize) -> HistoryPage;
    fn history_above(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
        floor: u64
    ) -> HistoryPage;
    fn message(&self, c: &ConversationId, seq: u64) -> Option<StoredMessage>;
    fn last_seq(&self, c: &ConversationId) -> u64;
    fn has_sent(&self, c: &ConversationId, user: u64) -> bool;
    fn first_retained_seq(&self, c: &ConversationId) -> u64;
});

delegate!(Retention {
    fn all_conversations(&self) -> Vec<(ConversationId, u64)>;
    fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Option<u64>;
    fn prune_history(&self, c: &ConversationId, keep_from: u64) -> usize;
    fn reclaim(&self) -> u64;
});

delegate!(ConversationIndex {
    fn conversations(&self, user: u64) -> Vec<UserConversation>;
    fn conversation_state(&self, user: u64, c: &ConversationId) -> Option<ConversationState>;
    fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> u64;
    fn note_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> u64;
    fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>
    ) -> ConversationState;
    fn mention_count(&self, c: &ConversationId, user: u64, after: u64) -> u64;
    fn quiet_count(&self, c: &ConversationId, after: u64) -> u64;
    fn hide_messages(&self, user: u64, c: &ConversationId, seqs: &[u64]) -> ();
    fn clear_history(&self, user: u64, c: &ConversationId, seq: u64) -> u64;
    fn hidden_view(&self, user: u64, c: &ConversationId, limit: usize) -> crate::HiddenView;
    fn views_changed_since(&self, user: u64, after: u64) -> (u64, Vec<ConversationId>);
});

delegate!(Accounts {
    fn register(&self, name: &str, password: &str) -> Account;
    fn login(&self, name: &str, password: &str) -> Session;
    fn change_password(
        &self,
        name: &str,
        current: &str,
        new: &str,
        keep: &TokenHash
    ) -> Vec<TokenHash>;
    fn account(&self, id: u64) -> Option<Account>;
    fn account_by_name(&self, name: &str) -> Option<Account>;
    fn external_account(&self, name: &str) -> Account;
    fn set_banned(&self, user: u64, banned: bool) -> ();
    fn is_banned(&self, user: u64) -> bool;
    fn set_display_name(&self, user: u64, name: Option<&str>) -> ();
    fn display_name(&self, user: u64) -> Option<String>;
    fn set_profile(&self, user: u64, profile: &crate::Profile) -> ();
    fn profile(&self, user: u64) -> crate::Profile;
    fn search_display_names(
        &self,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize
    ) -> Vec<(u64, String)>;
});

delegate!(Tokens {
    fn token_info(&self, token: &str) -> Option<TokenInfo>;
    fn token_info_by_hash(&self, hash: &TokenHash) -> Option<TokenInfo>;
    fn issue_token(&self, user: u64) -> Session;
    fn revoke_token_hash(&self, hash: &TokenHash) -> bool;
    fn revoke_user_tokens(&self, user: u64, keep: Option<&TokenHash>) -> Vec<TokenHash>;
    fn sweep_expired_tokens(&self, now_ms: u64) -> usize;
});

delegate!(Devices {
    fn devices(&self, user: u64) -> Vec<Device>;
    fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>
    ) -> Bound;
    fn unbind_device(&self, user: u64, device_id: &str) -> Option<Device>;
    fn remove_device(&self, user: u64, device_id: &str) -> Option<Device>;
    fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>
    ) -> bool;
});

delegate!(Relations {
    fn relation(&self, user: u64, peer: u64) -> Relation;
    fn relations(&self, user: u64, after: u64, limit: usize, set: RelationSet) -> Vec<(u64, Relation)>;
    fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange
    ) -> std::result::Result<Option<RequestOutcome>, RelationRefusal>;
    fn befriend_many(&self, user: u64, peers: &[u64]) -> usize;
});

delegate!(Groups {
    fn group(&self, id: u64) -> Option<GroupInfo>;
    fn member(&self, id: u64, user: u64) -> Option<Member>;
    fn members(&self, id: u64, after: u64, limit: usize) -> Vec<Member>;
    fn member_ids(&self, id: u64) -> Vec<(u64, u64)>;
    fn create_group(
        &self,
        owner: u64,
        name: &str,
        join_policy: JoinPolicy,
        history_visible: bool,
        members: &[u64],
        events: EventsFor
    ) -> GroupChanged;
    fn change_group(
        &self,
        id: u64,
        change: GroupChange,
        events: EventsFor
    ) -> std::result::Result<GroupChanged, MembershipRefusal>;
    fn invite(&self, user: u64, group: u64, inviter: u64, now_ms: u64) -> bool;
    fn invitations(&self, user: u64) -> Vec<Invitation>;
    fn take_invitation(&self, user: u64, group: u64) -> Option<Invitation>;
    fn bans(&self, group: u64, after: u64, limit: usize) -> Vec<Ban>;
    fn banned(&self, group: u64, user: u64) -> bool;
    fn request_join(&self, group: u64, user: u64, message: &str, now_ms: u64) -> bool;
    fn join_requests(&self, group: u64, after: u64, limit: usize) -> Vec<JoinRequest>;
    fn take_join_request(&self, group: u64, user: u64) -> Option<JoinRequest>;
});

delegate!(Reactions {
    fn react(
        &self,
        c: &ConversationId,
        changes: Vec<ReactionChange>,
        event: ReactionEventFn
    ) -> Reacted;
    fn reaction_counts(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
        viewer: u64
    ) -> Vec<ReactionCount>;
    fn reaction_kinds(&self, c: &ConversationId, seq: u64, limit: usize) -> Vec<String>;
    fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize
    ) -> Vec<(u64, u64)>;
});

delegate!(MediaRecords {
    fn blob(&self, sha256: &str) -> Option<BlobRecord>;
    fn put_blob(&self, record: &BlobRecord) -> BlobRecord;
    fn add_blob_owner(&self, sha256: &str, user: u64) -> ();
    fn is_blob_owner(&self, sha256: &str, user: u64) -> bool;
    fn update_blob(&self, sha256: &str, update: BlobUpdate) -> Option<BlobRecord>;
    fn blobs(&self) -> Vec<BlobRecord>;
    fn delete_blob(&self, sha256: &str) -> ();
});

#[async_trait]
impl Operations for ManagedStore {
    fn writable(&self) -> bool {
        self.store().is_ok_and(|s| s.writable())
    }

    fn queued(&self) -> usize {
        self.store().map_or(0, |s| s.queued())
    }

    fn commit_stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    async fn shutdown(&self) -> Result<()> {
        let healer = self.healer.lock().expect("healer").take();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(healer) = healer {
                drop(healer.stop);
                let _ = healer.thread.join();
            }
            shared.listener.lock().expect("listener").take();
            let store = shared.current.read().expect("store slot").clone();
            match store {
                Some(store) => store.shutdown(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| StorageError::ShuttingDown)?
    }
}
