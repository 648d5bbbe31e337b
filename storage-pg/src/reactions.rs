//! Reactions on PostgreSQL: one row per user, message and emoji. A batch of changes
//! is written by the committer that owns the conversation, alone in one transaction
//! that holds the conversation's row lock, with the event that tells of it (its seq
//! taken in the same transaction), as the embedded store does.

use std::sync::Arc;

use async_trait::async_trait;
use courier_protocol::ConversationId;
use courier_storage::{
    now_ms, validate_emoji, CommitListener, Reacted, ReactionChange, ReactionCount,
    ReactionEventFn, ReactionTotal, Reactions, Result, StorageError, StoredMessage,
};
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::committer::{index_for_users, insert_messages, lock_conversation, Command};
use crate::connect::{Prepared, Tx};
use crate::error::pg;
use crate::PgStore;

/// Reaction changes queued on the committer of their conversation.
pub(crate) struct ReactionRequest {
    pub conversation: ConversationId,
    pub changes: Vec<ReactionChange>,
    pub event: ReactionEventFn,
    pub reply: oneshot::Sender<Result<Reacted>>,
}

/// Writes one batch of changes in its own transaction; the listener hears of its
/// event before the caller is answered.
pub(crate) async fn apply(
    client: &mut Client,
    prepared: &Prepared,
    req: ReactionRequest,
    listener: Option<&Arc<dyn CommitListener>>,
) {
    let ReactionRequest {
        conversation,
        changes,
        event,
        reply,
    } = req;
    let result = match apply_in_tx(client, prepared, conversation, changes, event).await {
        Ok((reacted, message)) => {
            if let (Some(listener), Some(m)) = (listener, message) {
                listener.committed(std::slice::from_ref(&m), None);
            }
            Ok(reacted)
        }
        Err(e) => Err(e),
    };
    let _ = reply.send(result);
}

async fn apply_in_tx(
    client: &mut Client,
    prepared: &Prepared,
    c: ConversationId,
    changes: Vec<ReactionChange>,
    event: ReactionEventFn,
) -> Result<(Reacted, Option<StoredMessage>)> {
    let now = now_ms();
    let conv_id = c.to_string();
    let tx = Tx::begin(client, prepared).await?;
    let last = lock_conversation(&tx, &conv_id).await?;
    let mut effective = Vec::new();
    for change in changes {
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &conv_id,
            &(change.seq as i64),
            &change.emoji,
            &(change.user as i64),
        ];
        let changed = if change.added {
            tx.execute(
                "INSERT INTO reactions (conv, seq, emoji, user_id, at_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[key[0], key[1], key[2], key[3], &(now as i64)],
            )
            .await
        } else {
            tx.execute(
                "DELETE FROM reactions WHERE conv = $1 AND seq = $2 AND emoji = $3 AND user_id = $4",
                &key,
            )
            .await
        }
        .map_err(pg)?;
        if changed == 1 {
            effective.push(change);
        }
    }
    if effective.is_empty() {
        tx.commit().await.map_err(pg)?;
        return Ok((
            Reacted {
                effective,
                event: None,
            },
            None,
        ));
    }
    let mut touched: Vec<(u64, String)> =
        effective.iter().map(|e| (e.seq, e.emoji.clone())).collect();
    touched.sort();
    touched.dedup();
    let mut totals = Vec::with_capacity(touched.len());
    for (seq, emoji) in touched {
        let count: i64 = tx
            .query_one(
                "SELECT count(*) FROM reactions WHERE conv = $1 AND seq = $2 AND emoji = $3",
                &[&conv_id, &(seq as i64), &emoji],
            )
            .await
            .map_err(pg)?
            .get(0);
        totals.push(ReactionTotal {
            seq,
            emoji,
            count: count as u64,
        });
    }
    let seq = last as u64 + 1;
    let message = StoredMessage {
        conversation: c,
        seq,
        sender: 0,
        sender_device: String::new(),
        client_msg_id: format!("reactions-{seq}-{now}"),
        server_time_ms: now,
        reply_to_seq: 0,
        body: event(&effective, &totals),
        recalled: None,
        mentions: Vec::new(),
        edited: None,
    };
    insert_messages(&tx, std::slice::from_ref(&message)).await?;
    // The event is no news: it counts in nobody's unread number.
    tx.execute(
        "UPDATE messages SET quiet = true WHERE conv = $1 AND seq = $2",
        &[&conv_id, &(seq as i64)],
    )
    .await
    .map_err(pg)?;
    index_for_users(&tx, std::slice::from_ref(&message), now).await?;
    tx.execute(
        "UPDATE conversations SET last_seq = $2, last_activity = nextval('activity') WHERE id = $1",
        &[&conv_id, &(seq as i64)],
    )
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    let event = courier_storage::Appended {
        seq,
        server_time_ms: now,
        duplicate: false,
    };
    Ok((
        Reacted {
            effective,
            event: Some(event),
        },
        Some(message),
    ))
}

#[async_trait]
impl Reactions for PgStore {
    async fn react(
        &self,
        c: &ConversationId,
        changes: Vec<ReactionChange>,
        event: ReactionEventFn,
    ) -> Result<Reacted> {
        for change in &changes {
            validate_emoji(&change.emoji)?;
        }
        let index = (c.shard_hash() % self.inner.queues.len() as u64) as usize;
        let (reply, rx) = oneshot::channel();
        self.inner.queues[index]
            .send(Command::Reactions(ReactionRequest {
                conversation: *c,
                changes,
                event,
                reply,
            }))
            .await
            .map_err(|_| StorageError::ShuttingDown)?;
        rx.await.map_err(|_| StorageError::ShuttingDown)?
    }

    async fn reaction_kinds(
        &self,
        c: &ConversationId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<String>> {
        // A loose index scan over the primary key: one probe per emoji.
        let rows = self
            .reader()
            .await?
            .query(
                "WITH RECURSIVE k(emoji) AS (
                    (SELECT emoji FROM reactions WHERE conv = $1 AND seq = $2
                     ORDER BY emoji LIMIT 1)
                    UNION ALL
                    SELECT (SELECT r.emoji FROM reactions r
                            WHERE r.conv = $1 AND r.seq = $2 AND r.emoji > k.emoji
                            ORDER BY r.emoji LIMIT 1)
                    FROM k WHERE k.emoji IS NOT NULL
                 )
                 SELECT emoji FROM k WHERE emoji IS NOT NULL LIMIT $3",
                &[
                    &c.to_string(),
                    &(seq.min(i64::MAX as u64) as i64),
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn reaction_counts(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
        viewer: u64,
    ) -> Result<Vec<ReactionCount>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT seq, emoji, count(*), bool_or(user_id = $4) FROM reactions
                 WHERE conv = $1 AND seq BETWEEN $2 AND $3
                 GROUP BY seq, emoji ORDER BY seq, emoji COLLATE \"C\"",
                &[
                    &c.to_string(),
                    &(from as i64),
                    &(to.min(i64::MAX as u64) as i64),
                    &(viewer as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| ReactionCount {
                seq: r.get::<_, i64>(0) as u64,
                emoji: r.get(1),
                count: r.get::<_, i64>(2) as u64,
                mine: r.get(3),
            })
            .collect())
    }

    async fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT user_id, at_ms FROM reactions
                 WHERE conv = $1 AND seq = $2 AND emoji = $3 AND user_id > $4
                 ORDER BY user_id LIMIT $5",
                &[
                    &c.to_string(),
                    &(seq as i64),
                    &emoji,
                    &(after.min(i64::MAX as u64) as i64),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect())
    }
}
