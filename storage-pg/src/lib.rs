//! Courier's storage on PostgreSQL: the backend for deployments of several gateway
//! processes over one database (see `courier_storage`'s capability traits).
//!
//! It implements every capability, so [`PgStore`] is a [`courier_storage::Storage`]
//! and runs the same conformance suite as the embedded store. Appends are
//! group-committed by per-conversation-hash committer tasks (`committer`), each
//! batch one transaction that allocates gap-free seqs under the conversations' row
//! locks and commits with `synchronous_commit = on`; a group change is committed
//! alone by the committer of the group's conversation, under the same lock, so it
//! is ordered with the group's messages (`groups`); a pair's relations change under
//! the pair's advisory lock (`relations`); reads go through a few shared sessions.
//! The schema is migrated at open (`schema`). The gateway does not select it yet.
//!
//! What a distributed database speaking PostgreSQL's protocol (Citus, YugabyteDB,
//! CockroachDB) would need of this schema: every message statement names one
//! conversation or locks conversations in id order, so `messages`,
//! `conversation_senders` and `conversations` can be distributed (co-located) by
//! conversation id; `group_members` by group id, which a group's conversation id
//! contains, so the membership check of a group's batch stays on one node. The
//! `activity` sequence is store-wide: on a distributed database it would become a
//! hybrid clock or a per-node range (it only orders conversation lists).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accounts;
mod committer;
mod connect;
mod conversations;
mod devices;
mod error;
mod groups;
mod media;
mod reactions;
mod relations;
mod schema;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use courier_protocol::ConversationId;
use courier_storage::{
    AppendRequest, AppendTicket, CommitListener, CommitStats, HistoryPage, HistoryRange,
    MessageLog, Operations, Result, Retention, StorageError, StoredMessage,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use committer::{Command, Committer};
use connect::{Connector, Session};
use error::pg;

pub use schema::latest as latest_schema_version;

/// How the PostgreSQL backend connects and how hard it works.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A libpq-style connection string (`host=/run/postgresql user=courier dbname=courier`)
    /// or URL (`postgresql://courier@localhost/courier`).
    pub url: String,
    /// Committer tasks (each one session); a conversation always goes to the same one.
    pub committers: usize,
    /// Appends that may wait per committer before senders are held back.
    pub queue_depth: usize,
    /// Most appends one transaction takes.
    pub max_batch: usize,
    /// Sessions shared by reads.
    pub read_sessions: usize,
    /// Largest history page, in messages.
    pub max_page: usize,
    /// Password hashing cost.
    pub password: courier_storage::PasswordParams,
    /// How long a login token stays valid.
    pub token_ttl: std::time::Duration,
}

impl PgConfig {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            committers: 4,
            queue_depth: 4096,
            max_batch: 1024,
            read_sessions: 2,
            max_page: 100,
            password: courier_storage::PasswordParams::default(),
            token_ttl: std::time::Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The PostgreSQL backend's handle; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: PgConfig,
    connector: Connector,
    queues: Vec<mpsc::Sender<Command>>,
    committers: Mutex<Vec<JoinHandle<()>>>,
    reads: Vec<RwLock<Arc<Session>>>,
    next_read: AtomicUsize,
    /// The session multi-statement transactions outside the message path run on
    /// (retention, password changes; one at a time).
    maintenance: tokio::sync::Mutex<Option<Client>>,
    /// What a login for an unknown name is checked against.
    dummy_hash: courier_storage::credentials::DummyHash,
    stats: Arc<CommitStats>,
}

impl PgStore {
    /// Connects, brings the schema up to date and starts the committers. Must run
    /// inside a tokio runtime. `listener` hears of every committed message.
    pub async fn open(config: PgConfig, listener: Option<Arc<dyn CommitListener>>) -> Result<Self> {
        let parsed: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|_| StorageError::InvalidArgument("not a PostgreSQL connection string"))?;
        let connector = Connector::new(parsed);
        let mut first = connector.connect().await?;
        schema::migrate(&mut first).await?;
        let mut reads = vec![RwLock::new(Arc::new(Session::new(first)))];
        while reads.len() < config.read_sessions.max(1) {
            reads.push(RwLock::new(Arc::new(Session::new(
                connector.connect().await?,
            ))));
        }
        let stats = Arc::new(CommitStats::default());
        let mut queues = Vec::new();
        let mut committers = Vec::new();
        for index in 0..config.committers.max(1) {
            let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
            let committer = Committer {
                index,
                connector: connector.clone(),
                max_batch: config.max_batch.max(1),
                listener: listener.clone(),
                stats: stats.clone(),
                failing: Default::default(),
                prepared: Default::default(),
            };
            committers.push(tokio::spawn(committer.run(rx)));
            queues.push(tx);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connector,
                queues,
                committers: Mutex::new(committers),
                reads,
                next_read: AtomicUsize::new(0),
                maintenance: tokio::sync::Mutex::new(None),
                dummy_hash: Default::default(),
                stats,
            }),
        })
    }

    /// Lets each committer finish what was queued before this call, then stops
    /// them; appends after it fail with [`StorageError::ShuttingDown`].
    pub async fn shutdown(&self) -> Result<()> {
        let handles = std::mem::take(&mut *self.inner.committers.lock().expect("committers"));
        for q in &self.inner.queues {
            let _ = q.send(Command::Shutdown).await;
        }
        for h in handles {
            let _ = h.await;
        }
        Ok(())
    }

    /// A session for reads (a new one in place of one that closed).
    async fn reader(&self) -> Result<Arc<Session>> {
        let slot = self.inner.next_read.fetch_add(1, Ordering::Relaxed) % self.inner.reads.len();
        let client = self.inner.reads[slot]
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !client.is_closed() {
            return Ok(client);
        }
        let fresh = Arc::new(Session::new(self.inner.connector.connect().await?));
        *self.inner.reads[slot]
            .write()
            .unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// The maintenance session (a new one in place of one that closed).
    async fn maintenance_client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.inner.connector.connect().await?);
        }
        Ok(slot.as_mut().expect("connected"))
    }

    /// The conversation's last seq and first retained seq (0 and 1 when it has none).
    async fn bounds(&self, c: &ConversationId) -> Result<(u64, u64)> {
        let row = self
            .reader()
            .await?
            .query_opt(
                "SELECT last_seq, first_retained FROM conversations WHERE id = $1",
                &[&c.to_string()],
            )
            .await
            .map_err(pg)?;
        Ok(row.map_or((0, 1), |r| {
            (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)
        }))
    }

    async fn read_range(
        &self,
        c: &ConversationId,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredMessage>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT m.seq, m.sender, m.sender_device, m.client_msg_id, m.server_time_ms,
                        m.reply_to_seq, m.body, m.recalled_by, m.recalled_at_ms,
                        m.edited_by, m.edited_at_ms, m.edit_count, m.edit_seq, e.body,
                        m.mentions
                 FROM messages m
                 LEFT JOIN messages e ON e.conv = m.conv AND e.seq = m.edit_seq
                 WHERE m.conv = $1 AND m.seq BETWEEN $2 AND $3 ORDER BY m.seq",
                &[&c.to_string(), &(from as i64), &(to as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| committer::message_from_row(*c, r))
            .collect())
    }
}

#[async_trait]
impl MessageLog for PgStore {
    async fn submit(&self, req: AppendRequest) -> Result<AppendTicket> {
        req.validate()?;
        let index = (req.conversation.shard_hash() % self.inner.queues.len() as u64) as usize;
        let (tx, rx) = oneshot::channel();
        self.inner.queues[index]
            .send(Command::Append((req, tx)))
            .await
            .map_err(|_| StorageError::ShuttingDown)?;
        Ok(AppendTicket::from_receiver(rx))
    }

    async fn history(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.history_above(c, range, limit, 0).await
    }

    async fn history_above(
        &self,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
        floor: u64,
    ) -> Result<HistoryPage> {
        let limit = limit.clamp(1, self.inner.config.max_page);
        let (last, retained) = self.bounds(c).await?;
        let lowest = floor.saturating_add(1).max(retained);
        let Some((from, to, has_more)) = range.page(last, lowest, limit) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: false,
            });
        };
        Ok(HistoryPage {
            messages: self.read_range(c, from, to).await?,
            has_more,
        })
    }

    async fn message(&self, c: &ConversationId, seq: u64) -> Result<Option<StoredMessage>> {
        let (last, retained) = self.bounds(c).await?;
        if seq == 0 || seq > last || seq < retained {
            return Ok(None);
        }
        Ok(self.read_range(c, seq, seq).await?.pop())
    }

    async fn last_seq(&self, c: &ConversationId) -> Result<u64> {
        Ok(self.bounds(c).await?.0)
    }

    async fn has_sent(&self, c: &ConversationId, user: u64) -> Result<bool> {
        Ok(self
            .reader()
            .await?
            .query_opt(
                "SELECT 1 FROM conversation_senders WHERE conv = $1 AND sender = $2",
                &[&c.to_string(), &(user as i64)],
            )
            .await
            .map_err(pg)?
            .is_some())
    }

    async fn first_retained_seq(&self, c: &ConversationId) -> Result<u64> {
        Ok(self.bounds(c).await?.1)
    }
}

#[async_trait]
impl Retention for PgStore {
    async fn all_conversations(&self) -> Result<Vec<(ConversationId, u64)>> {
        let rows = self
            .reader()
            .await?
            .query(
                "SELECT id, last_seq FROM conversations WHERE last_seq > 0 ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                let c: String = r.get(0);
                let c = c.parse().map_err(|_| error::corrupt("conversation id"))?;
                Ok((c, r.get::<_, i64>(1) as u64))
            })
            .collect()
    }

    async fn first_seq_since(&self, c: &ConversationId, time_ms: u64) -> Result<Option<u64>> {
        let row = self
            .reader()
            .await?
            .query_one(
                "SELECT min(seq) FROM messages WHERE conv = $1 AND server_time_ms >= $2",
                &[&c.to_string(), &(time_ms as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, Option<i64>>(0).map(|s| s as u64))
    }

    async fn prune_history(&self, c: &ConversationId, keep_from: u64) -> Result<usize> {
        // Under the conversation's lock, like an append: a prune and a batch of
        // the same conversation do not interleave.
        let mut slot = self.inner.maintenance.lock().await;
        let client = self.maintenance_client(&mut slot).await?;
        let tx = client.transaction().await.map_err(pg)?;
        let id = c.to_string();
        let row = tx
            .query_opt(
                "SELECT first_retained FROM conversations WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(0);
        };
        let first: i64 = row.get(0);
        let keep_from = keep_from as i64;
        if keep_from <= first {
            return Ok(0);
        }
        let deleted = tx
            .execute(
                "DELETE FROM messages WHERE conv = $1 AND seq < $2",
                &[&id, &keep_from],
            )
            .await
            .map_err(pg)?;
        tx.execute(
            "DELETE FROM reactions WHERE conv = $1 AND seq < $2",
            &[&id, &keep_from],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE conversations SET first_retained = $2 WHERE id = $1",
            &[&id, &keep_from],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted as usize)
    }

    async fn reclaim(&self) -> Result<u64> {
        // PostgreSQL frees deleted rows' space itself (autovacuum).
        Ok(0)
    }
}

#[async_trait]
impl Operations for PgStore {
    fn writable(&self) -> bool {
        self.inner.stats.unwritable_shards.load(Ordering::Relaxed) == 0
    }

    fn queued(&self) -> usize {
        self.inner
            .queues
            .iter()
            .map(|q| q.max_capacity() - q.capacity())
            .sum()
    }

    fn commit_stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    async fn shutdown(&self) -> Result<()> {
        PgStore::shutdown(self).await
    }
}
