//! The per-user conversation index on PostgreSQL: each user's list with read and
//! delivery cursors, mute and pin. Cursors only move forward, never past the
//! conversation's last seq; a user without an entry is not a participant.

use async_trait::async_trait;
use courier_protocol::ConversationId;
use courier_storage::{
    ConversationIndex, ConversationState, Result, StorageError, UserConversation,
};

use crate::error::{corrupt, pg};
use crate::PgStore;

/// The columns of an entry, in the order [`state_from_row`] reads them.
const STATE: &str = "uc.read_seq, uc.delivered_seq, uc.joined_seq, uc.muted, uc.pinned, \
                     uc.created_ms, uc.since_seq";

fn state_from_row(row: &tokio_postgres::Row, at: usize) -> ConversationState {
    let u = |i: usize| row.get::<_, i64>(at + i) as u64;
    ConversationState {
        read_seq: u(0),
        delivered_seq: u(1),
        joined_seq: u(2),
        muted: row.get(at + 3),
        pinned: row.get(at + 4),
        created_ms: u(5),
        since_seq: u(6),
    }
}

/// Which cursor a move is for.
#[derive(Clone, Copy)]
enum Cursor {
    Read,
    Delivered,
}

impl PgStore {
    /// Moves a cursor of `user` in `c` forward to `seq` (capped by the last seq) in
    /// one statement; returns the cursor now in force.
    async fn move_cursor(
        &self,
        cursor: Cursor,
        user: u64,
        c: &ConversationId,
        seq: u64,
    ) -> Result<u64> {
        let column = match cursor {
            Cursor::Read => "read_seq",
            Cursor::Delivered => "delivered_seq",
        };
        let client = self.reader().await?;
        let (user, conv, seq) = (user as i64, c.to_string(), seq.min(i64::MAX as u64) as i64);
        let moved = client
            .query_opt(
                &format!(
                    "UPDATE user_conversations uc SET {column} = v.target
                     FROM (SELECT LEAST($3, COALESCE(
                         (SELECT last_seq FROM conversations WHERE id = $2), 0)) AS target) v
                     WHERE uc.user_id = $1 AND uc.conv = $2 AND uc.{column} < v.target
                     RETURNING uc.{column}"
                ),
                &[&user, &conv, &seq],
            )
            .await
            .map_err(pg)?;
        if let Some(row) = moved {
            return Ok(row.get::<_, i64>(0) as u64);
        }
        let row = client
            .query_opt(
                &format!(
                    "SELECT {column} FROM user_conversations WHERE user_id = $1 AND conv = $2"
                ),
                &[&user, &conv],
            )
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotParticipant)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}

#[async_trait]
impl ConversationIndex for PgStore {
    async fn conversations(&self, user: u64) -> Result<Vec<UserConversation>> {
        let rows = self
            .reader()
            .await?
            .query(
                &format!(
                    "SELECT uc.conv, COALESCE(c.last_seq, 0), COALESCE(c.last_activity, 0), {STATE}
                     FROM user_conversations uc LEFT JOIN conversations c ON c.id = uc.conv
                     WHERE uc.user_id = $1
                     ORDER BY COALESCE(c.last_activity, 0) DESC, uc.conv"
                ),
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let conversation = r
                    .get::<_, String>(0)
                    .parse()
                    .map_err(|_| corrupt("conversation id"))?;
                Ok(UserConversation {
                    conversation,
                    last_seq: r.get::<_, i64>(1) as u64,
                    last_activity: r.get::<_, i64>(2) as u64,
                    state: state_from_row(r, 3),
                })
            })
            .collect()
    }

    async fn conversation_state(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<Option<ConversationState>> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!(
                    "SELECT {STATE} FROM user_conversations uc WHERE uc.user_id = $1 AND uc.conv = $2"
                ),
                &[&(user as i64), &c.to_string()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| state_from_row(&r, 0)))
    }

    async fn mark_read(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        self.move_cursor(Cursor::Read, user, c, seq).await
    }

    async fn note_delivered(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        self.move_cursor(Cursor::Delivered, user, c, seq).await
    }

    async fn mention_count(&self, c: &ConversationId, user: u64, after: u64) -> Result<u64> {
        let row = self
            .reader()
            .await?
            .query_one(
                "SELECT count(*) FROM messages
                 WHERE conv = $1 AND seq > $2 AND recalled_by IS NULL
                   AND mentions && ARRAY[$3::int8, 0::int8]",
                &[
                    &c.to_string(),
                    &(after.min(i64::MAX as u64) as i64),
                    &(user as i64),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn quiet_count(&self, c: &ConversationId, after: u64) -> Result<u64> {
        let row = self
            .reader()
            .await?
            .query_one(
                "SELECT count(*) FROM messages WHERE conv = $1 AND seq > $2 AND quiet",
                &[&c.to_string(), &(after.min(i64::MAX as u64) as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn hide_messages(&self, user: u64, c: &ConversationId, seqs: &[u64]) -> Result<()> {
        if seqs.len() > courier_storage::MAX_HIDE_AT_ONCE {
            return Err(StorageError::InvalidArgument(
                "at most 100 messages may be hidden at once",
            ));
        }
        let seqs: Vec<i64> = seqs
            .iter()
            .map(|&s| s.min(i64::MAX as u64) as i64)
            .collect();
        self.reader()
            .await?
            .execute(
                "WITH added AS (
                   INSERT INTO user_hidden (user_id, conv, seq)
                   SELECT $1, $2, s FROM unnest($3::int8[]) AS s
                   WHERE s > COALESCE(
                       (SELECT seq FROM user_cleared WHERE user_id = $1 AND conv = $2), 0)
                   ON CONFLICT DO NOTHING
                   RETURNING 1)
                 INSERT INTO user_cleared (user_id, conv, seq, version)
                 SELECT $1, $2, 0, nextval('view_versions') WHERE EXISTS (SELECT 1 FROM added)
                 ON CONFLICT (user_id, conv) DO UPDATE SET version = EXCLUDED.version",
                &[&(user as i64), &c.to_string(), &seqs],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn clear_history(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        let seq = seq.min(i64::MAX as u64) as i64;
        // One statement: the cleared seq moves up and the marks under it go together.
        let row = self
            .reader()
            .await?
            .query_one(
                "WITH cleared AS (
                   INSERT INTO user_cleared (user_id, conv, seq, version)
                   VALUES ($1, $2, $3, nextval('view_versions'))
                   ON CONFLICT (user_id, conv) DO UPDATE
                     SET seq = GREATEST(user_cleared.seq, EXCLUDED.seq),
                         version = CASE WHEN EXCLUDED.seq > user_cleared.seq
                                   THEN EXCLUDED.version ELSE user_cleared.version END
                   RETURNING seq),
                 dropped AS (
                   DELETE FROM user_hidden
                   WHERE user_id = $1 AND conv = $2 AND seq <= (SELECT seq FROM cleared))
                 SELECT seq FROM cleared",
                &[&(user as i64), &c.to_string(), &seq],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn hidden_view(
        &self,
        user: u64,
        c: &ConversationId,
        limit: usize,
    ) -> Result<courier_storage::HiddenView> {
        let client = self.reader().await?;
        let (user, conv) = (user as i64, c.to_string());
        let (cleared, version): (i64, i64) = client
            .query_opt(
                "SELECT seq, version FROM user_cleared WHERE user_id = $1 AND conv = $2",
                &[&user, &conv],
            )
            .await
            .map_err(pg)?
            .map_or((0, 0), |r| (r.get(0), r.get(1)));
        let rows = client
            .query(
                "SELECT seq FROM (SELECT seq FROM user_hidden
                    WHERE user_id = $1 AND conv = $2 AND seq > $3
                    ORDER BY seq DESC LIMIT $4) AS newest ORDER BY seq",
                &[&user, &conv, &cleared, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(courier_storage::HiddenView {
            cleared_seq: cleared as u64,
            hidden: rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect(),
            version: version as u64,
        })
    }

    async fn views_changed_since(
        &self,
        user: u64,
        after: u64,
    ) -> Result<(u64, Vec<ConversationId>)> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT conv, version FROM user_cleared WHERE user_id = $1",
                &[&(user as i64)],
            )
            .await
            .map_err(pg)?;
        let mut latest = 0;
        let mut changed = Vec::new();
        for r in &rows {
            let version = r.get::<_, i64>(1) as u64;
            latest = latest.max(version);
            if version > after {
                let conv: String = r.get(0);
                changed.push(
                    conv.parse()
                        .map_err(|_| StorageError::Corrupt("conversation id"))?,
                );
            }
        }
        Ok((latest, changed))
    }

    async fn set_conversation_flags(
        &self,
        user: u64,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<ConversationState> {
        let row = self
            .reader()
            .await?
            .query_opt(
                &format!(
                    "UPDATE user_conversations uc
                     SET muted = COALESCE($3, uc.muted), pinned = COALESCE($4, uc.pinned)
                     WHERE uc.user_id = $1 AND uc.conv = $2
                     RETURNING {STATE}"
                ),
                &[&(user as i64), &c.to_string(), &muted, &pinned],
            )
            .await
            .map_err(pg)?
            .ok_or(StorageError::NotParticipant)?;
        Ok(state_from_row(&row, 0))
    }
}
