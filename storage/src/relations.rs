//! The relation index: friendships (request, accept, decline, cancel, remove), one-way
//! follows and blocks, kept by user so that "my friends" is one prefix scan.
//!
//! Each pair is stored twice, once on each user's shard, each side holding that
//! user's view (`request_sent` on one side is `request_received` on the other). Both
//! sides change under one striped lock, in one commit-log record of the pair's home
//! shard (the lower user id's), durable before a call returns: concurrent requests
//! between the same two users cannot interleave, and a crash never leaves one side
//! changed without the other.

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::ops::{Op, Tree};
use crate::relation_rules::{self, Relation, RelationChange, RelationRefusal, RequestOutcome};
use crate::writer::OpsRequest;
use crate::{now_ms, Store};

const RELATION_V1: u8 = 1;

impl Relation {
    fn encode(&self) -> [u8; 10] {
        let flags = u8::from(self.friend)
            | u8::from(self.request_sent) << 1
            | u8::from(self.request_received) << 2
            | u8::from(self.following) << 3
            | u8::from(self.followed_by) << 4
            | u8::from(self.blocking) << 5
            | u8::from(self.blocked_by) << 6;
        let mut out = [0u8; 10];
        let mut buf = &mut out[..];
        buf.put_u8(RELATION_V1);
        buf.put_u8(flags);
        buf.put_u64(self.since_ms);
        out
    }

    fn decode(v: &[u8]) -> Result<Self> {
        let mut buf = v;
        if buf.len() != 10 || buf.get_u8() != RELATION_V1 {
            return Err(StorageError::Corrupt("relation"));
        }
        let f = buf.get_u8();
        Ok(Self {
            friend: f & 1 != 0,
            request_sent: f & 2 != 0,
            request_received: f & 4 != 0,
            following: f & 8 != 0,
            followed_by: f & 16 != 0,
            blocking: f & 32 != 0,
            blocked_by: f & 64 != 0,
            since_ms: buf.get_u64(),
        })
    }
}

/// The striped lock of a pair (the same from either side).
fn pair_lock(a: u64, b: u64) -> u64 {
    a.min(b) ^ a.max(b).rotate_left(32)
}

fn pair_key(user: u64, peer: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&user.to_be_bytes());
    k[8..].copy_from_slice(&peer.to_be_bytes());
    k
}

impl Store {
    /// `user`'s view of `peer`.
    pub fn relation(&self, user: u64, peer: u64) -> Result<Relation> {
        let tree = &self.shard(self.inner.map.user(user)).userpeer_relation;
        tree.get(pair_key(user, peer))?
            .map(|v| Relation::decode(&v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Up to `limit` peers of `user` (after peer id `after`) whose relation passes
    /// `keep`, in peer id order.
    pub fn relations(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        keep: impl Fn(&Relation) -> bool,
    ) -> Result<Vec<(u64, Relation)>> {
        let tree = &self.shard(self.inner.map.user(user)).userpeer_relation;
        let start = pair_key(user, after.saturating_add(1));
        let end = pair_key(user, u64::MAX);
        let mut out = Vec::new();
        for entry in tree.range(start..=end) {
            let (k, v) = entry?;
            let relation = Relation::decode(&v)?;
            if keep(&relation) {
                let peer = u64::from_be_bytes(k[8..16].try_into().expect("16-byte key"));
                out.push((peer, relation));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Applies `change`, made by `user` toward `peer`, by the rules of
    /// [`RelationChange::apply`]; durable once it returns. A friend request answers
    /// whether it made them friends.
    pub fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange,
    ) -> Result<Result<Option<RequestOutcome>, RelationRefusal>> {
        self.change_pair(user, peer, |mine, theirs| change.apply(mine, theirs))
    }

    /// Asks `peer` to be `user`'s friend. If `peer` had asked `user`, they become
    /// friends at once.
    pub fn request_friend(
        &self,
        user: u64,
        peer: u64,
    ) -> Result<Result<RequestOutcome, RelationRefusal>> {
        Ok(self
            .change_relation(user, peer, RelationChange::Request)?
            .map(|outcome| outcome.unwrap_or(RequestOutcome::Pending)))
    }

    /// `user` accepts `requester`'s pending request.
    pub fn accept_friend(&self, user: u64, requester: u64) -> Result<Result<(), RelationRefusal>> {
        Ok(self
            .change_relation(user, requester, RelationChange::Accept)?
            .map(drop))
    }

    /// Ends a friendship (both sides).
    pub fn remove_friend(&self, user: u64, peer: u64) -> Result<Result<(), RelationRefusal>> {
        Ok(self
            .change_relation(user, peer, RelationChange::Unfriend)?
            .map(drop))
    }

    /// Makes `user` and each of `peers` friends at once, with one flush per touched
    /// shard: an administrative bulk path (imports, load tests), not a user action.
    /// Pairs where either side blocks the other are skipped; returns how many pairs
    /// are friends now.
    pub fn befriend_many(&self, user: u64, peers: &[u64]) -> Result<usize> {
        let mut peers: Vec<u64> = peers.iter().copied().filter(|&p| p != user).collect();
        peers.sort_unstable();
        peers.dedup();
        let mut count = 0;
        // A chunk's pairs are locked together, written with one record per home
        // shard, and unlocked once durable.
        for chunk in peers.chunks(256) {
            let _guards = self.lock_many(chunk.iter().map(|&peer| pair_lock(user, peer)));
            let now = now_ms();
            let mut by_home: std::collections::BTreeMap<usize, Vec<Op>> = Default::default();
            for &peer in chunk {
                let mut mine = self.relation(user, peer)?;
                let mut theirs = self.relation(peer, user)?;
                if !relation_rules::befriend(&mut mine, &mut theirs) {
                    continue;
                }
                mine.since_ms = now;
                theirs.since_ms = now;
                let ops = by_home.entry(self.pair_home(user, peer)).or_default();
                self.pair_ops(user, peer, mine, theirs, ops);
                count += 1;
            }
            let waiting = by_home
                .into_iter()
                .map(|(home, ops)| self.submit_ops_blocking(home, OpsRequest::decided(ops)))
                .collect::<Result<Vec<_>>>()?;
            for done in waiting {
                done.blocking_recv()
                    .map_err(|_| StorageError::ShuttingDown)??;
            }
        }
        Ok(count)
    }

    /// Reads both sides of a pair, applies `change` under the pair's lock, and writes
    /// and flushes both sides if it succeeded.
    fn change_pair<T>(
        &self,
        user: u64,
        peer: u64,
        change: impl FnOnce(&mut Relation, &mut Relation) -> Result<T, RelationRefusal>,
    ) -> Result<Result<T, RelationRefusal>> {
        if user == peer {
            return Ok(Err(RelationRefusal::SelfRelation));
        }
        let _guard = self.lock_for(pair_lock(user, peer));
        let mut mine = self.relation(user, peer)?;
        let mut theirs = self.relation(peer, user)?;
        let outcome = match change(&mut mine, &mut theirs) {
            Ok(t) => t,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let now = now_ms();
        mine.since_ms = now;
        theirs.since_ms = now;
        let mut ops = Vec::with_capacity(2);
        self.pair_ops(user, peer, mine, theirs, &mut ops);
        self.run_ops_blocking::<()>(self.pair_home(user, peer), OpsRequest::decided(ops))?;
        Ok(Ok(outcome))
    }

    /// The shard whose log carries every change of the pair: both sides change in
    /// one record, in one order.
    fn pair_home(&self, a: u64, b: u64) -> usize {
        self.inner.map.user(a.min(b))
    }

    /// The ops that write both sides of a pair.
    fn pair_ops(&self, user: u64, peer: u64, mine: Relation, theirs: Relation, ops: &mut Vec<Op>) {
        for (owner, other, relation) in [(user, peer, mine), (peer, user, theirs)] {
            let shard = self.inner.map.user(owner) as u16;
            let key = pair_key(owner, other).to_vec();
            ops.push(if relation.is_empty() {
                Op::Delete {
                    shard,
                    tree: Tree::Relation,
                    key,
                }
            } else {
                Op::Put {
                    shard,
                    tree: Tree::Relation,
                    key,
                    value: relation.encode().to_vec(),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn change(s: &Store, user: u64, peer: u64, c: RelationChange) -> Result<(), RelationRefusal> {
        s.change_relation(user, peer, c).unwrap().map(drop)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        (dir, store)
    }

    #[test]
    fn friendship_life_cycle() {
        let (_d, s) = store();
        assert_eq!(s.request_friend(1, 2).unwrap(), Ok(RequestOutcome::Pending));
        assert!(s.relation(1, 2).unwrap().request_sent);
        assert!(s.relation(2, 1).unwrap().request_received);
        assert_eq!(
            s.accept_friend(1, 2).unwrap(),
            Err(RelationRefusal::NoRequest)
        );
        assert_eq!(change(&s, 1, 2, RelationChange::Cancel), Ok(()));
        assert_eq!(s.relation(2, 1).unwrap(), Relation::default());
        s.request_friend(1, 2).unwrap().unwrap();
        assert_eq!(change(&s, 2, 1, RelationChange::Decline), Ok(()));
        s.request_friend(1, 2).unwrap().unwrap();
        assert_eq!(s.accept_friend(2, 1).unwrap(), Ok(()));
        assert!(s.relation(1, 2).unwrap().friend && s.relation(2, 1).unwrap().friend);
        assert_eq!(
            s.request_friend(2, 1).unwrap(),
            Err(RelationRefusal::AlreadyFriends)
        );
        let friends = s.relations(1, 0, 10, |r| r.friend).unwrap();
        assert_eq!(friends.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.remove_friend(2, 1).unwrap(), Ok(()));
        assert!(!s.relation(1, 2).unwrap().friend);
        assert_eq!(
            s.remove_friend(2, 1).unwrap(),
            Err(RelationRefusal::NotFriends)
        );
        assert_eq!(
            s.request_friend(3, 3).unwrap(),
            Err(RelationRefusal::SelfRelation)
        );
    }

    #[test]
    fn crossing_requests_make_friends() {
        let (_d, s) = store();
        s.request_friend(5, 6).unwrap().unwrap();
        assert_eq!(s.request_friend(6, 5).unwrap(), Ok(RequestOutcome::Friends));
        assert!(s.relation(5, 6).unwrap().friend);
    }

    #[test]
    fn blocks_and_follows() {
        let (_d, s) = store();
        change(&s, 1, 2, RelationChange::Follow(true)).unwrap();
        assert!(s.relation(2, 1).unwrap().followed_by);
        s.request_friend(2, 1).unwrap().unwrap();
        change(&s, 1, 2, RelationChange::Block(true)).unwrap();
        let theirs = s.relation(2, 1).unwrap();
        assert!(theirs.blocked_by && !theirs.request_sent);
        assert_eq!(
            s.request_friend(2, 1).unwrap(),
            Err(RelationRefusal::Blocked)
        );
        assert_eq!(
            change(&s, 2, 1, RelationChange::Follow(true)),
            Err(RelationRefusal::Blocked)
        );
        assert_eq!(
            s.request_friend(1, 2).unwrap(),
            Err(RelationRefusal::Blocking)
        );
        change(&s, 1, 2, RelationChange::Block(false)).unwrap();
        assert_eq!(s.request_friend(2, 1).unwrap(), Ok(RequestOutcome::Pending));
    }
}
