//! Relations on PostgreSQL, by `courier_storage`'s rules ([`RelationChange::apply`],
//! [`RelationSet`], [`befriend`]): both views of a pair are read, changed and
//! written in one transaction under the pair's advisory lock, so two gateways
//! changing one pair at once apply one change after the other.

use async_trait::async_trait;
use courier_protocol::conversation::mix;
use courier_storage::{
    befriend, now_ms, Relation, RelationChange, RelationRefusal, RelationSet, Relations,
    RequestOutcome, Result,
};
use tokio_postgres::Transaction;

use crate::error::pg;
use crate::PgStore;

const VIEW: &str = "friend, request_sent, request_received, following, followed_by, blocking, \
                    blocked_by, since_ms";

fn relation_from_row(row: &tokio_postgres::Row, at: usize) -> Relation {
    Relation {
        friend: row.get(at),
        request_sent: row.get(at + 1),
        request_received: row.get(at + 2),
        following: row.get(at + 3),
        followed_by: row.get(at + 4),
        blocking: row.get(at + 5),
        blocked_by: row.get(at + 6),
        since_ms: row.get::<_, i64>(at + 7) as u64,
    }
}

/// The advisory lock key of a pair (a collision only serialises two pairs).
fn pair_lock(a: u64, b: u64) -> i64 {
    (mix(a.min(b)) ^ mix(a.max(b)).rotate_left(17)) as i64
}

/// A condition that keeps the rows a set may hold (an index-friendly pre-filter;
/// [`RelationSet::contains`] decides).
fn prefilter(set: RelationSet) -> &'static str {
    match set {
        RelationSet::Friends => "friend",
        RelationSet::RequestsReceived => "request_received",
        RelationSet::RequestsSent => "request_sent",
        RelationSet::Following => "following",
        RelationSet::Followers => "followed_by",
        RelationSet::Blocking => "blocking",
        RelationSet::PresenceAudience { .. } => "(friend OR followed_by)",
    }
}

/// Both views of a pair, read in `tx` (which holds the pair's lock).
async fn pair(tx: &Transaction<'_>, user: u64, peer: u64) -> Result<(Relation, Relation)> {
    let rows = tx
        .query(
            &format!(
                "SELECT user_id, {VIEW} FROM relations
                 WHERE (user_id = $1 AND peer_id = $2) OR (user_id = $2 AND peer_id = $1)"
            ),
            &[&(user as i64), &(peer as i64)],
        )
        .await
        .map_err(pg)?;
    let (mut mine, mut theirs) = (Relation::default(), Relation::default());
    for r in &rows {
        if r.get::<_, i64>(0) == user as i64 {
            mine = relation_from_row(r, 1);
        } else {
            theirs = relation_from_row(r, 1);
        }
    }
    Ok((mine, theirs))
}

/// Writes both views of a pair in `tx` (an empty one is deleted).
async fn write_pair(
    tx: &Transaction<'_>,
    user: u64,
    peer: u64,
    mine: Relation,
    theirs: Relation,
) -> Result<()> {
    for (owner, other, r) in [(user, peer, mine), (peer, user, theirs)] {
        let (owner, other) = (owner as i64, other as i64);
        if r.is_empty() {
            tx.execute(
                "DELETE FROM relations WHERE user_id = $1 AND peer_id = $2",
                &[&owner, &other],
            )
            .await
            .map_err(pg)?;
            continue;
        }
        tx.execute(
            &format!(
                "INSERT INTO relations (user_id, peer_id, {VIEW})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (user_id, peer_id) DO UPDATE SET
                   friend = EXCLUDED.friend, request_sent = EXCLUDED.request_sent,
                   request_received = EXCLUDED.request_received,
                   following = EXCLUDED.following, followed_by = EXCLUDED.followed_by,
                   blocking = EXCLUDED.blocking, blocked_by = EXCLUDED.blocked_by,
                   since_ms = EXCLUDED.since_ms"
            ),
            &[
                &owner,
                &other,
                &r.friend,
                &r.request_sent,
                &r.request_received,
                &r.following,
                &r.followed_by,
                &r.blocking,
                &r.blocked_by,
                &(r.since_ms as i64),
            ],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

#[async_trait]
impl Relations for PgStore {
    async fn relation(&self, user: u64, peer: u64) -> Result<Relation> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!("SELECT {VIEW} FROM relations WHERE user_id = $1 AND peer_id = $2"),
                &[&(user as i64), &(peer as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map_or_else(Relation::default, |r| relation_from_row(&r, 0)))
    }

    async fn relations(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        set: RelationSet,
    ) -> Result<Vec<(u64, Relation)>> {
        let client = self.reader().await?;
        let mut out = Vec::new();
        let mut after = after as i64;
        // The pre-filter lets through rows the set may still refuse (a blocked
        // friend for a presence audience): read on until the page is full.
        while out.len() < limit {
            let rows = client
                .query(
                    &format!(
                        "SELECT peer_id, {VIEW} FROM relations
                         WHERE user_id = $1 AND peer_id > $2 AND {}
                         ORDER BY peer_id LIMIT $3",
                        prefilter(set)
                    ),
                    &[&(user as i64), &after, &(limit as i64)],
                )
                .await
                .map_err(pg)?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.get(0);
            for r in &rows {
                let relation = relation_from_row(r, 1);
                if set.contains(&relation) && out.len() < limit {
                    out.push((r.get::<_, i64>(0) as u64, relation));
                }
            }
        }
        Ok(out)
    }

    async fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange,
    ) -> Result<std::result::Result<Option<RequestOutcome>, RelationRefusal>> {
        if user == peer {
            return Ok(Err(RelationRefusal::SelfRelation));
        }
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&pair_lock(user, peer)],
        )
        .await
        .map_err(pg)?;
        let (mut mine, mut theirs) = pair(&tx, user, peer).await?;
        let outcome = match change.apply(&mut mine, &mut theirs) {
            Ok(outcome) => outcome,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let now = now_ms();
        mine.since_ms = now;
        theirs.since_ms = now;
        write_pair(&tx, user, peer, mine, theirs).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Ok(outcome))
    }

    async fn befriend_many(&self, user: u64, peers: &[u64]) -> Result<usize> {
        let mut peers: Vec<u64> = peers.iter().copied().filter(|&p| p != user).collect();
        peers.sort_unstable_by_key(|&p| pair_lock(user, p));
        peers.dedup();
        let mut count = 0;
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        // A chunk of pairs per transaction, their locks taken in key order.
        for chunk in peers.chunks(256) {
            let tx = client.transaction().await.map_err(pg)?;
            let now = now_ms();
            for &peer in chunk {
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1)",
                    &[&pair_lock(user, peer)],
                )
                .await
                .map_err(pg)?;
                let (mut mine, mut theirs) = pair(&tx, user, peer).await?;
                if !befriend(&mut mine, &mut theirs) {
                    continue;
                }
                mine.since_ms = now;
                theirs.since_ms = now;
                write_pair(&tx, user, peer, mine, theirs).await?;
                count += 1;
            }
            tx.commit().await.map_err(pg)?;
        }
        Ok(count)
    }
}
