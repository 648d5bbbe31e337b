//! The group member cache: fan-out and send authorization read member lists from
//! memory, not storage. An entry is loaded on first use and dropped whenever the
//! API layer changes the group's membership; a load that raced with a change is not
//! kept (each lock shard has a version that every invalidation bumps).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use courier_protocol::conversation::mix;
use courier_storage::{StorageError, Store};

const SHARDS: usize = 32;

#[derive(Default)]
struct Shard {
    groups: HashMap<u64, Arc<[u64]>>,
    version: u64,
}

/// Sorted member ids by group.
pub struct MemberCache {
    store: OnceLock<Store>,
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
    pub fn attach(&self, store: Store) {
        let _ = self.store.set(store);
    }

    fn shard(&self, group: u64) -> &RwLock<Shard> {
        &self.shards[(mix(group) % SHARDS as u64) as usize]
    }

    /// The member ids of `group`, ascending.
    pub fn members(&self, group: u64) -> Result<Arc<[u64]>, StorageError> {
        let shard = self.shard(group);
        let version = {
            let s = shard.read().expect("member cache lock");
            if let Some(members) = s.groups.get(&group) {
                return Ok(members.clone());
            }
            s.version
        };
        let store = self.store.get().ok_or(StorageError::ShuttingDown)?;
        let members: Arc<[u64]> = store.member_ids(group)?.into();
        let mut s = shard.write().expect("member cache lock");
        if s.version == version {
            if s.groups.len() >= self.max_groups_per_shard {
                s.groups.clear();
            }
            s.groups.insert(group, members.clone());
        }
        Ok(members)
    }

    /// Whether `user` is a member of `group`.
    pub fn contains(&self, group: u64, user: u64) -> Result<bool, StorageError> {
        Ok(self.members(group)?.binary_search(&user).is_ok())
    }

    /// Forgets `group` after its membership changed.
    pub fn invalidate(&self, group: u64) {
        let mut s = self.shard(group).write().expect("member cache lock");
        s.groups.remove(&group);
        s.version += 1;
    }
}
