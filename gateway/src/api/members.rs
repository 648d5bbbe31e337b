//! The group member cache: fan-out and send authorization read member lists from
//! memory, not storage. An entry is loaded on first use and dropped when the store's
//! fan-out stage reports a change of the group's members (in log order, before
//! anything committed after the change is routed); a load that raced with a change
//! is not kept (each lock shard has a version that every invalidation bumps).
//!
//! A load reads the store as its writer left it, which may be ahead of the message
//! being routed: each entry remembers the newest membership in it (the seq of the
//! event that added that member), and a message older than that is routed to the
//! members it was stored for only ([`MemberCache::members_at`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use courier_protocol::conversation::mix;
use courier_storage::{Storage, StorageError};

const SHARDS: usize = 32;

#[derive(Default)]
struct Shard {
    groups: HashMap<u64, Entry>,
    version: u64,
}

#[derive(Clone)]
struct Entry {
    members: Arc<[u64]>,
    /// The highest seq from which one of `members` receives messages.
    newest_since: u64,
}

/// Sorted member ids by group.
pub struct MemberCache {
    store: OnceLock<Arc<dyn Storage>>,
    shards: Box<[RwLock<Shard>]>,
    max_groups_per_shard: usize,
}

impl MemberCache {
    /// A cache holding at most about `max_groups` groups.
    pub fn new(max_groups: usize) -> Self {
        Self {
            store: OnceLock::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            max_groups_per_shard: (max_groups / SHARDS).max(1),
        }
    }

    /// Connects the cache to the store it loads from (once, at start-up).
    pub fn attach(&self, store: Arc<dyn Storage>) {
        let _ = self.store.set(store);
    }

    fn shard(&self, group: u64) -> &RwLock<Shard> {
        &self.shards[(mix(group) % SHARDS as u64) as usize]
    }

    fn store(&self) -> Result<&dyn Storage, StorageError> {
        self.store
            .get()
            .map(|s| s.as_ref())
            .ok_or(StorageError::ShuttingDown)
    }

    /// The member ids of `group`, ascending.
    pub async fn members(&self, group: u64) -> Result<Arc<[u64]>, StorageError> {
        Ok(self.entry(group).await?.members)
    }

    /// The ids of the members that message `seq` of `group` goes to (those added by
    /// the event at `seq` or before), ascending.
    pub async fn members_at(&self, group: u64, seq: u64) -> Result<Arc<[u64]>, StorageError> {
        let entry = self.entry(group).await?;
        if entry.newest_since <= seq {
            return Ok(entry.members);
        }
        Ok(self
            .store()?
            .member_ids(group)
            .await?
            .into_iter()
            .filter(|&(_, since)| since <= seq)
            .map(|(user, _)| user)
            .collect())
    }

    /// [`MemberCache::members_at`] if the cache can answer without the store (the
    /// fan-out stage's path: it loads only on a miss).
    pub fn cached_members_at(&self, group: u64, seq: u64) -> Option<Arc<[u64]>> {
        let s = self.shard(group).read().expect("member cache lock");
        s.groups
            .get(&group)
            .filter(|e| e.newest_since <= seq)
            .map(|e| e.members.clone())
    }

    async fn entry(&self, group: u64) -> Result<Entry, StorageError> {
        let shard = self.shard(group);
        let version = {
            let s = shard.read().expect("member cache lock");
            if let Some(entry) = s.groups.get(&group) {
                return Ok(entry.clone());
            }
            s.version
        };
        let loaded = self.store()?.member_ids(group).await?;
        let entry = Entry {
            newest_since: loaded.iter().map(|m| m.1).max().unwrap_or(0),
            members: loaded.into_iter().map(|m| m.0).collect(),
        };
        let mut s = shard.write().expect("member cache lock");
        if s.version == version {
            if s.groups.len() >= self.max_groups_per_shard {
                s.groups.clear();
            }
            s.groups.insert(group, entry.clone());
        }
        Ok(entry)
    }

    /// Whether `user` is a member of `group`.
    pub async fn contains(&self, group: u64, user: u64) -> Result<bool, StorageError> {
        Ok(self.members(group).await?.binary_search(&user).is_ok())
    }

    /// Forgets every group (the store reopened: what it replayed was never reported).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut s = shard.write().expect("member cache lock");
            s.groups.clear();
            s.version += 1;
        }
    }

    /// Forgets `group` after its membership changed.
    pub fn invalidate(&self, group: u64) {
        let mut s = self.shard(group).write().expect("member cache lock");
        s.groups.remove(&group);
        s.version += 1;
    }
}
