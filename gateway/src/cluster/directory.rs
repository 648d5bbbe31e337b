//! The directory: on which nodes each user has devices online.
//!
//! Every node keeps the whole directory in memory. It is soft state, rebuilt from the
//! nodes themselves: each node owns its own entries (the users with a device in its
//! registry), broadcasts changes to them as numbered deltas, answers snapshot
//! requests, and renews a lease with heartbeats (`bus`). This module is the state
//! only: users by node slot, and the presence edges a change makes (first device
//! online anywhere, last device offline everywhere).
//!
//! A node is a slot, 0..64; slot 0 is this node. A user's entry is a bit set of
//! slots, so a lookup on the fan-out path is one hash probe under a read lock.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use courier_protocol::conversation::mix;

/// Most nodes one deployment may have (slots in a user's bit set).
pub const MAX_NODES: usize = 64;
/// This node's slot.
pub const SELF: usize = 0;

const SHARDS: usize = 64;

/// A presence edge a change made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The user's first device came online anywhere.
    Online,
    /// The user's last device went offline everywhere.
    Offline,
}

/// Users by node slot, and slot names.
pub struct Directory {
    shards: Box<[RwLock<HashMap<u64, u64>>]>,
    /// Which slots hold a live node, as a bit set (bit 0: this node).
    live: AtomicU64,
    names: RwLock<Vec<Option<Arc<str>>>>,
}

impl Directory {
    /// An empty directory for node `name` (slot 0).
    pub fn new(name: &str) -> Self {
        let mut names = vec![None; MAX_NODES];
        names[SELF] = Some(Arc::from(name));
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            live: AtomicU64::new(1),
            names: RwLock::new(names),
        }
    }

    fn shard(&self, user: u64) -> &RwLock<HashMap<u64, u64>> {
        &self.shards[(mix(user) % SHARDS as u64) as usize]
    }

    /// Gives `name` a free slot; `None` when every slot is taken.
    pub fn add_node(&self, name: &str) -> Option<usize> {
        let mut names = self.names.write().expect("directory names");
        let slot = names.iter().position(Option::is_none)?;
        names[slot] = Some(Arc::from(name));
        self.live.fetch_or(1 << slot, Ordering::Release);
        Some(slot)
    }

    /// Frees `slot` (its node is gone) after dropping its users; returns the users
    /// that are now offline everywhere.
    pub fn remove_node(&self, slot: usize) -> Vec<u64> {
        debug_assert_ne!(slot, SELF);
        self.live.fetch_and(!(1 << slot), Ordering::Release);
        let gone = self.replace_slot(slot, &HashSet::new()).1;
        self.names.write().expect("directory names")[slot] = None;
        gone
    }

    /// The node in `slot`.
    pub fn name(&self, slot: usize) -> Option<Arc<str>> {
        self.names.read().expect("directory names")[slot].clone()
    }

    /// The slots of live nodes (this one's included), as a bit set.
    pub fn live_slots(&self) -> u64 {
        self.live.load(Ordering::Acquire)
    }

    /// Whether any node besides this one is live (the fan-out path skips lookups when
    /// none is).
    pub fn has_peers(&self) -> bool {
        self.live.load(Ordering::Acquire) & !1 != 0
    }

    /// Marks `user` online or offline on `slot`; the edge it makes, if any.
    pub fn set(&self, user: u64, slot: usize, online: bool) -> Option<Edge> {
        let bit = 1u64 << slot;
        let mut map = self.shard(user).write().expect("directory shard");
        let before = map.get(&user).copied().unwrap_or(0);
        let after = if online { before | bit } else { before & !bit };
        if after == 0 {
            map.remove(&user);
        } else {
            map.insert(user, after);
        }
        edge(before, after)
    }

    /// The other nodes' slots where `user` has devices, as a bit set.
    pub fn remote_slots(&self, user: u64) -> u64 {
        self.shard(user)
            .read()
            .expect("directory shard")
            .get(&user)
            .map_or(0, |s| s & !1)
    }

    /// Whether `user` has a device online on any node.
    pub fn online_anywhere(&self, user: u64) -> bool {
        self.shard(user)
            .read()
            .expect("directory shard")
            .contains_key(&user)
    }

    /// The users online on `slot` (this node's, for a snapshot).
    pub fn users_on(&self, slot: usize) -> Vec<u64> {
        let bit = 1u64 << slot;
        let mut users = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.read().expect("directory shard");
            users.extend(map.iter().filter(|(_, s)| *s & bit != 0).map(|(u, _)| *u));
        }
        users
    }

    /// Makes `users` exactly the users online on `slot` (a snapshot); returns the
    /// users that came online anywhere and those now offline everywhere.
    pub fn replace_slot(&self, slot: usize, users: &HashSet<u64>) -> (Vec<u64>, Vec<u64>) {
        let bit = 1u64 << slot;
        let (mut came, mut gone) = (Vec::new(), Vec::new());
        for shard in self.shards.iter() {
            let mut map = shard.write().expect("directory shard");
            map.retain(|user, s| {
                if *s & bit != 0 && !users.contains(user) {
                    *s &= !bit;
                    if *s == 0 {
                        gone.push(*user);
                        return false;
                    }
                }
                true
            });
        }
        for &user in users {
            if self.set(user, slot, true) == Some(Edge::Online) {
                came.push(user);
            }
        }
        (came, gone)
    }

    /// Users online anywhere (all nodes).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("directory shard").len())
            .sum()
    }

    /// Whether no user is online anywhere.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn edge(before: u64, after: u64) -> Option<Edge> {
    match (before == 0, after == 0) {
        (true, false) => Some(Edge::Online),
        (false, true) => Some(Edge::Offline),
        _ => None,
    }
}

/// Iterates the slots set in `slots`.
pub fn slots(mut slots: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if slots == 0 {
            return None;
        }
        let slot = slots.trailing_zeros() as usize;
        slots &= slots - 1;
        Some(slot)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_first_device_anywhere_and_last_everywhere() {
        let d = Directory::new("a");
        let b = d.add_node("b").unwrap();
        assert_eq!(d.set(7, SELF, true), Some(Edge::Online));
        assert_eq!(d.set(7, b, true), None, "already online on this node");
        assert_eq!(d.remote_slots(7), 1 << b);
        assert_eq!(d.set(7, SELF, false), None, "still online on b");
        assert!(d.online_anywhere(7));
        assert_eq!(d.set(7, b, false), Some(Edge::Offline));
        assert!(!d.online_anywhere(7));
        assert!(d.is_empty());
    }

    #[test]
    fn a_removed_node_takes_its_users_with_it() {
        let d = Directory::new("a");
        let b = d.add_node("b").unwrap();
        assert!(d.has_peers());
        d.set(1, b, true);
        d.set(2, b, true);
        d.set(2, SELF, true);
        let mut gone = d.remove_node(b);
        gone.sort_unstable();
        assert_eq!(gone, vec![1], "user 2 is still here");
        assert!(!d.has_peers());
        assert_eq!(d.name(b), None);
        assert_eq!(d.add_node("c"), Some(b), "the slot is reused");
    }

    #[test]
    fn a_snapshot_replaces_a_slot() {
        let d = Directory::new("a");
        let b = d.add_node("b").unwrap();
        d.set(1, b, true);
        d.set(2, b, true);
        let (came, gone) = d.replace_slot(b, &HashSet::from([2, 3]));
        assert_eq!((came, gone), (vec![3], vec![1]));
        let mut on_b = d.users_on(b);
        on_b.sort_unstable();
        assert_eq!(on_b, vec![2, 3]);
    }

    #[test]
    fn slot_sets_iterate_in_order() {
        assert_eq!(slots(0b1010_0110).collect::<Vec<_>>(), vec![1, 2, 5, 7]);
        assert_eq!(slots(0).count(), 0);
        assert_eq!(slots(1 << 63).collect::<Vec<_>>(), vec![63]);
    }
}
