//! Group commit on PostgreSQL: one task per committer takes whatever appends queued
//! while it was busy and stores them in one transaction.
//!
//! The transaction locks the conversations' counter rows in id order (`FOR UPDATE`;
//! two batches lock in the same order, so they cannot deadlock), finds resends by
//! the `(conversation, sender, client_msg_id)` key under that lock, checks group
//! membership under it (a membership change takes the same lock, so it is ordered
//! with the group's messages), allocates the seqs, inserts the messages, erases
//! recalled ones, moves the counters, and commits with `synchronous_commit = on`:
//! an append is acknowledged only once PostgreSQL has it on disk. Seqs are gap-free
//! across gateways because they are allocated under the row lock in the inserting
//! transaction: a batch that fails allocates nothing.
//!
//! A conversation always goes to the same committer (by hash), so appends submitted
//! one after another from one task get increasing seqs.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{
    AppendRequest, Appended, CommitListener, EditOf, EditRefusal, Edited, Recall, RecallRefusal,
    Result, StorageError, StoredMessage,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::connect::{Connector, Prepared, Tx};
use crate::error::pg;

/// A queued append and who waits for it.
pub(crate) type Pending = (AppendRequest, oneshot::Sender<Result<Appended>>);

/// What a committer task is told.
pub(crate) enum Command {
    Append(Pending),
    /// A group change: committed alone, after the appends queued before it.
    Group(crate::groups::GroupRequest),
    /// Reaction changes with their event: committed alone, like a group change.
    Reactions(crate::reactions::ReactionRequest),
    /// Commit what came before, then stop.
    Shutdown,
}

pub(crate) struct Committer {
    pub index: usize,
    pub connector: Connector,
    pub max_batch: usize,
    pub listener: Option<Arc<dyn CommitListener>>,
    pub stats: Arc<courier_storage::CommitStats>,
    /// The last batch failed.
    pub failing: std::sync::atomic::AtomicBool,
    /// Statements prepared on the current session.
    pub prepared: Prepared,
}

/// The outcome of one append within a batch.
enum Outcome {
    /// Stored by this batch (valid once it commits).
    Fresh(Appended),
    /// Stored before (a resend).
    Stored(Appended),
    Refused(StorageError),
}

impl Committer {
    pub async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut client: Option<Client> = None;
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut stop = false;
        while !stop {
            let Some(first) = rx.recv().await else {
                break;
            };
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(p) => batch.push(p),
                    Command::Group(req) => {
                        self.commit_batch(&mut client, &mut batch).await;
                        match self.client(&mut client).await {
                            Ok(c) => {
                                crate::groups::apply(c, &self.prepared, req, self.listener.as_ref())
                                    .await
                            }
                            Err(e) => drop(req.reply.send(Err(e))),
                        }
                    }
                    Command::Reactions(req) => {
                        self.commit_batch(&mut client, &mut batch).await;
                        match self.client(&mut client).await {
                            Ok(c) => {
                                crate::reactions::apply(
                                    c,
                                    &self.prepared,
                                    req,
                                    self.listener.as_ref(),
                                )
                                .await
                            }
                            Err(e) => drop(req.reply.send(Err(e))),
                        }
                    }
                    Command::Shutdown => {
                        stop = true;
                        break;
                    }
                }
                if batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_batch(&mut client, &mut batch).await;
        }
    }

    /// Commits `batch` (if any) and answers its waiters.
    async fn commit_batch(&self, client: &mut Option<Client>, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let result = match self.client(client).await {
            Ok(c) => commit(c, &self.prepared, batch).await,
            Err(e) => Err(e),
        };
        self.stats
            .flush_us
            .observe(started.elapsed().as_micros() as u64);
        self.stats.batch_size.observe(batch.len() as u64);
        {
            match result {
                Ok((outcomes, messages)) => {
                    self.note_failing(false);
                    use std::sync::atomic::Ordering::Relaxed;
                    self.stats
                        .appended
                        .fetch_add(messages.len() as u64, Relaxed);
                    let resent = outcomes
                        .iter()
                        .filter(|o| matches!(o, Outcome::Stored(_)))
                        .count();
                    self.stats.deduplicated.fetch_add(resent as u64, Relaxed);
                    if let (Some(listener), false) = (&self.listener, messages.is_empty()) {
                        listener.committed(&messages, None);
                    }
                    for ((_, tx), outcome) in batch.drain(..).zip(outcomes) {
                        let _ = tx.send(match outcome {
                            Outcome::Fresh(a) | Outcome::Stored(a) => Ok(a),
                            Outcome::Refused(e) => Err(e),
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(committer = self.index, error = %e, "a batch of appends failed; nothing of it is stored");
                    self.note_failing(true);
                    self.stats
                        .failed_commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if client.as_ref().is_some_and(Client::is_closed) {
                        *client = None;
                    }
                    for (_, tx) in batch.drain(..) {
                        let _ = tx.send(Err(again(&e)));
                    }
                }
            }
        }
    }

    /// Counts this committer among the failing ones (what `writable` reports)
    /// while its last batch failed.
    fn note_failing(&self, failing: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let was = self.failing.swap(failing, Relaxed);
        match (was, failing) {
            (false, true) => drop(self.stats.unwritable_shards.fetch_add(1, Relaxed)),
            (true, false) => drop(self.stats.unwritable_shards.fetch_sub(1, Relaxed)),
            _ => {}
        }
    }

    async fn client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            self.prepared.clear();
            *slot = Some(self.connector.connect().await?);
        }
        Ok(slot.as_mut().expect("connected"))
    }
}

/// The same failure for every waiter of a failed batch.
fn again(e: &StorageError) -> StorageError {
    if e.is_unavailable() {
        StorageError::Io(std::io::Error::other(e.to_string()))
    } else {
        StorageError::Index(e.to_string())
    }
}

fn id(v: u64) -> i64 {
    v as i64
}

/// Stores `batch` in one transaction; returns each append's outcome (in order) and
/// the messages stored, in commit order.
async fn commit(
    client: &mut Client,
    prepared: &Prepared,
    batch: &[Pending],
) -> Result<(Vec<Outcome>, Vec<StoredMessage>)> {
    let now = courier_storage::now_ms();
    let tx = Tx::begin(client, prepared).await?;

    let mut convs: Vec<String> = batch
        .iter()
        .map(|(r, _)| r.conversation.to_string())
        .collect();
    convs.sort_unstable();
    convs.dedup();
    tx.execute(
        "INSERT INTO conversations (id) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
        &[&convs],
    )
    .await
    .map_err(pg)?;
    let mut next_seq: HashMap<String, i64> = HashMap::new();
    let mut floor: HashMap<String, i64> = HashMap::new();
    for row in tx
        .query(
            "SELECT id, last_seq, first_retained FROM conversations
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&convs],
        )
        .await
        .map_err(pg)?
    {
        let c: String = row.get(0);
        next_seq.insert(c.clone(), row.get::<_, i64>(1) + 1);
        floor.insert(c, row.get(2));
    }

    // Resends of messages stored before this batch.
    let keys: (Vec<String>, Vec<i64>, Vec<String>) = batch
        .iter()
        .map(|(r, _)| {
            (
                r.conversation.to_string(),
                id(r.sender),
                r.client_msg_id.clone(),
            )
        })
        .fold((vec![], vec![], vec![]), |mut acc, (c, s, m)| {
            acc.0.push(c);
            acc.1.push(s);
            acc.2.push(m);
            acc
        });
    let mut stored: HashMap<(String, i64, String), Appended> = HashMap::new();
    for row in tx
        .query(
            "SELECT m.conv, m.sender, m.client_msg_id, m.seq, m.server_time_ms
             FROM messages m
             JOIN unnest($1::text[], $2::int8[], $3::text[]) AS k(conv, sender, cmid)
               ON m.conv = k.conv AND m.sender = k.sender AND m.client_msg_id = k.cmid",
            &[&keys.0, &keys.1, &keys.2],
        )
        .await
        .map_err(pg)?
    {
        stored.insert(
            (row.get(0), row.get(1), row.get(2)),
            Appended {
                seq: row.get::<_, i64>(3) as u64,
                server_time_ms: row.get::<_, i64>(4) as u64,
                duplicate: true,
            },
        );
    }

    // Group membership of the senders, under the groups' conversation locks.
    let (groups, senders): (Vec<i64>, Vec<i64>) = batch
        .iter()
        .filter_map(|(r, _)| match r.conversation {
            ConversationId::Group(g) => Some((id(g), id(r.sender))),
            ConversationId::Direct { .. } => None,
        })
        .unzip();
    // Each sender's right to write: a member, muted until when (its own mute, or
    // the group's for plain members), read under the conversation's lock, in order
    // with the group's changes.
    let mut members: HashMap<(i64, i64), i64> = HashMap::new();
    if !groups.is_empty() {
        for row in tx
            .query(
                "SELECT m.group_id, m.user_id,
                        CASE WHEN COALESCE(g.muted, false) AND m.role < 2
                             THEN 9223372036854775807 ELSE m.muted_until_ms END
                 FROM group_members m
                 LEFT JOIN groups g ON g.id = m.group_id
                 JOIN unnest($1::int8[], $2::int8[]) AS k(g, u)
                   ON m.group_id = k.g AND m.user_id = k.u
                 WHERE NOT COALESCE(g.dismissed, false)",
                &[&groups, &senders],
            )
            .await
            .map_err(pg)?
        {
            members.insert((row.get(0), row.get(1)), row.get(2));
        }
    }

    // Recall and edit targets: they exist (within retention) and are not recalled yet.
    let (rc, rs): (Vec<String>, Vec<i64>) = batch
        .iter()
        .filter_map(|(r, _)| match (r.recalls, r.edits) {
            (0, None) => None,
            (0, Some(e)) => Some((r.conversation.to_string(), id(e.target))),
            (target, _) => Some((r.conversation.to_string(), id(target))),
        })
        .unzip();
    let mut recallable: HashMap<(String, i64), bool> = HashMap::new();
    if !rc.is_empty() {
        for row in tx
            .query(
                "SELECT m.conv, m.seq, m.recalled_by IS NULL FROM messages m
                 JOIN unnest($1::text[], $2::int8[]) AS k(conv, seq)
                   ON m.conv = k.conv AND m.seq = k.seq",
                &[&rc, &rs],
            )
            .await
            .map_err(pg)?
        {
            recallable.insert((row.get(0), row.get(1)), row.get(2));
        }
    }

    let mut outcomes = Vec::with_capacity(batch.len());
    let mut messages: Vec<StoredMessage> = Vec::new();
    let mut in_batch: HashMap<(String, i64, String), Appended> = HashMap::new();
    let mut recalls: Vec<(String, i64, i64)> = Vec::new();
    let mut edits: Vec<(String, EditOf, i64, i64)> = Vec::new();
    for (req, _) in batch {
        let conv = req.conversation.to_string();
        let key = (conv.clone(), id(req.sender), req.client_msg_id.clone());
        if let Some(a) = stored.get(&key) {
            outcomes.push(Outcome::Stored(*a));
            continue;
        }
        if let Some(a) = in_batch.get(&key) {
            outcomes.push(Outcome::Fresh(Appended {
                duplicate: true,
                ..*a
            }));
            continue;
        }
        // Sender 0 is the server itself (notices, erasures): it writes to any group.
        if let (ConversationId::Group(g), true) = (req.conversation, req.sender != 0) {
            match members.get(&(id(g), id(req.sender))) {
                None => {
                    outcomes.push(Outcome::Refused(StorageError::NotParticipant));
                    continue;
                }
                Some(&until) if (now as i64) < until => {
                    let until_ms = if until == i64::MAX {
                        u64::MAX
                    } else {
                        until as u64
                    };
                    outcomes.push(Outcome::Refused(StorageError::Muted { until_ms }));
                    continue;
                }
                Some(_) => {}
            }
        }
        if req.recalls != 0 {
            let target = (conv.clone(), id(req.recalls));
            let refusal = match recallable.get(&target) {
                _ if id(req.recalls) < floor[&conv] => Some(RecallRefusal::NoMessage),
                Some(true) => None,
                Some(false) => Some(RecallRefusal::AlreadyRecalled),
                None => Some(RecallRefusal::NoMessage),
            };
            if let Some(refusal) = refusal {
                outcomes.push(Outcome::Refused(StorageError::Recall(refusal)));
                continue;
            }
            recallable.insert(target, false);
            recalls.push((conv.clone(), id(req.recalls), id(req.sender)));
        }
        let seq = next_seq.get_mut(&conv).expect("locked above");
        if let (0, Some(edit)) = (req.recalls, req.edits) {
            let refusal = match recallable.get(&(conv.clone(), id(edit.target))) {
                _ if id(edit.target) < floor[&conv] => Some(EditRefusal::NoMessage),
                Some(true) => None,
                Some(false) => Some(EditRefusal::Recalled),
                None => Some(EditRefusal::NoMessage),
            };
            if let Some(refusal) = refusal {
                outcomes.push(Outcome::Refused(StorageError::Edit(refusal)));
                continue;
            }
            edits.push((conv.clone(), edit, *seq, id(req.sender)));
        }
        let appended = Appended {
            seq: *seq as u64,
            server_time_ms: now,
            duplicate: false,
        };
        *seq += 1;
        in_batch.insert(key, appended);
        messages.push(StoredMessage {
            conversation: req.conversation,
            seq: appended.seq,
            sender: req.sender,
            sender_device: req.sender_device.clone(),
            client_msg_id: req.client_msg_id.clone(),
            server_time_ms: now,
            reply_to_seq: req.reply_to_seq,
            body: req.body.clone(),
            recalled: None,
            mentions: req.mentions.clone(),
            edited: None,
        });
        outcomes.push(Outcome::Fresh(appended));
    }

    if !messages.is_empty() {
        insert_messages(&tx, &messages).await?;
        index_for_users(&tx, &messages, now).await?;
        let (ids, seqs): (Vec<String>, Vec<i64>) = next_seq
            .iter()
            .map(|(c, next)| (c.clone(), next - 1))
            .unzip();
        tx.execute(
            "UPDATE conversations c SET last_seq = v.seq, last_activity = nextval('activity')
             FROM unnest($1::text[], $2::int8[]) AS v(id, seq)
             WHERE c.id = v.id AND v.seq > c.last_seq",
            &[&ids, &seqs],
        )
        .await
        .map_err(pg)?;
    }
    // Edits before recalls: a recall later in the batch erases the edit events too.
    for (conv, edit, event_seq, by) in &edits {
        let target = id(edit.target);
        // The target mentions whom its latest text mentions (the event row carried
        // them here); the event itself mentions nobody.
        tx.execute(
            "UPDATE messages t SET edited_by = $3, edited_at_ms = $4,
                 edit_count = t.edit_count + 1, edit_seq = $5, mentions = e.mentions
             FROM messages e
             WHERE t.conv = $1 AND t.seq = $2 AND e.conv = $1 AND e.seq = $5",
            &[conv, &target, by, &(now as i64), event_seq],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "UPDATE messages SET edit_of = $3, mentions = NULL, quiet = true
             WHERE conv = $1 AND seq = $2",
            &[conv, event_seq, &target],
        )
        .await
        .map_err(pg)?;
        if !edit.keep_versions {
            // The earlier versions go: the original body and the earlier events.
            tx.execute(
                "UPDATE messages SET body = '\\x'::bytea WHERE conv = $1 AND seq = $2",
                &[conv, &target],
            )
            .await
            .map_err(pg)?;
            tx.execute(
                "UPDATE messages SET body = '\\x'::bytea, recalled_by = $3, recalled_at_ms = $4
                 WHERE conv = $1 AND edit_of = $2 AND seq < $5 AND recalled_by IS NULL",
                &[conv, &target, by, &(now as i64), event_seq],
            )
            .await
            .map_err(pg)?;
        }
    }
    if !recalls.is_empty() {
        let (c, s, by): (Vec<String>, Vec<i64>, Vec<i64>) =
            recalls
                .into_iter()
                .fold((vec![], vec![], vec![]), |mut acc, (c, s, b)| {
                    acc.0.push(c);
                    acc.1.push(s);
                    acc.2.push(b);
                    acc
                });
        tx.execute(
            "UPDATE messages m SET body = '\\x'::bytea, recalled_by = v.by, recalled_at_ms = $4
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS v(conv, seq, by)
             WHERE m.conv = v.conv AND (m.seq = v.seq
                 OR (m.edit_of = v.seq AND m.recalled_by IS NULL))",
            &[&c, &s, &by, &(now as i64)],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)?;
    Ok((outcomes, messages))
}

/// Takes the row lock of conversation `conv_id` (creating its row if need be) for
/// the rest of `tx`; returns its last seq. Changes written alone (group changes,
/// reactions) take it, so they are ordered with the conversation's messages.
pub(crate) async fn lock_conversation(tx: &Tx<'_>, conv_id: &str) -> Result<i64> {
    tx.execute(
        "INSERT INTO conversations (id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&conv_id],
    )
    .await
    .map_err(pg)?;
    Ok(tx
        .query_one(
            "SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE",
            &[&conv_id],
        )
        .await
        .map_err(pg)?
        .get(0))
}

pub(crate) async fn insert_messages(tx: &Tx<'_>, messages: &[StoredMessage]) -> Result<()> {
    let conv: Vec<String> = messages
        .iter()
        .map(|m| m.conversation.to_string())
        .collect();
    let seq: Vec<i64> = messages.iter().map(|m| m.seq as i64).collect();
    let sender: Vec<i64> = messages.iter().map(|m| id(m.sender)).collect();
    let device: Vec<&str> = messages.iter().map(|m| m.sender_device.as_str()).collect();
    let cmid: Vec<&str> = messages.iter().map(|m| m.client_msg_id.as_str()).collect();
    let time: Vec<i64> = messages.iter().map(|m| m.server_time_ms as i64).collect();
    let reply: Vec<i64> = messages.iter().map(|m| m.reply_to_seq as i64).collect();
    let body: Vec<&[u8]> = messages.iter().map(|m| m.body.as_ref()).collect();
    // Arrays of arrays cannot be unnested: mentions travel as "1,2,3".
    let mentions: Vec<String> = messages
        .iter()
        .map(|m| {
            m.mentions
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    tx.execute(
        "INSERT INTO messages
           (conv, seq, sender, sender_device, client_msg_id, server_time_ms, reply_to_seq, body,
            mentions)
         SELECT c, s, f, d, i, t, r, b,
                CASE WHEN m = '' THEN NULL ELSE string_to_array(m, ',')::int8[] END
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[],
                     $6::int8[], $7::int8[], $8::bytea[], $9::text[]) AS v(c, s, f, d, i, t, r, b, m)",
        &[&conv, &seq, &sender, &device, &cmid, &time, &reply, &body, &mentions],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "INSERT INTO conversation_senders (conv, sender)
         SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT DO NOTHING",
        &[&conv, &sender],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// What the users' conversation lists learn from a batch, in its transaction: a
/// direct conversation's first message puts it in both participants' lists; what
/// a user sends, they have read (their read cursor moves up to it).
pub(crate) async fn index_for_users(
    tx: &Tx<'_>,
    messages: &[StoredMessage],
    now: u64,
) -> Result<()> {
    let mut new_users = Vec::new();
    let mut new_convs = Vec::new();
    for m in messages {
        if let (1, ConversationId::Direct { low, high }) = (m.seq, m.conversation) {
            for user in [low, high] {
                new_users.push(id(user));
                new_convs.push(m.conversation.to_string());
            }
        }
    }
    if !new_users.is_empty() {
        tx.execute(
            "INSERT INTO user_conversations (user_id, conv, created_ms)
             SELECT u, c, $3 FROM unnest($1::int8[], $2::text[]) AS v(u, c)
             ON CONFLICT DO NOTHING",
            &[&new_users, &new_convs, &(now as i64)],
        )
        .await
        .map_err(pg)?;
    }
    let mut newest: HashMap<(i64, String), i64> = HashMap::new();
    for m in messages {
        let seq = newest
            .entry((id(m.sender), m.conversation.to_string()))
            .or_default();
        *seq = (*seq).max(m.seq as i64);
    }
    let (mut users, mut convs, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
    for ((u, c), s) in newest {
        users.push(u);
        convs.push(c);
        seqs.push(s);
    }
    tx.execute(
        "UPDATE user_conversations uc SET read_seq = v.seq
         FROM unnest($1::int8[], $2::text[], $3::int8[]) AS v(u, c, seq)
         WHERE uc.user_id = v.u AND uc.conv = v.c AND uc.read_seq < v.seq",
        &[&users, &convs, &seqs],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// A stored row as a message.
pub(crate) fn message_from_row(c: ConversationId, row: &tokio_postgres::Row) -> StoredMessage {
    let recalled_by: Option<i64> = row.get(7);
    let recalled_at: Option<i64> = row.get(8);
    let edited_by: Option<i64> = row.get(9);
    let edit_seq: Option<i64> = row.get(12);
    let edited = match (recalled_by, edited_by, edit_seq) {
        (None, Some(by), Some(event_seq)) => Some(Edited {
            by_user: by as u64,
            at_ms: row.get::<_, Option<i64>>(10).unwrap_or(0) as u64,
            count: row.get::<_, i32>(11) as u32,
            event_seq: event_seq as u64,
            // Retention may have taken the event but not the message.
            event_body: row
                .get::<_, Option<Vec<u8>>>(13)
                .map(Bytes::from)
                .unwrap_or_default(),
        }),
        _ => None,
    };
    StoredMessage {
        conversation: c,
        seq: row.get::<_, i64>(0) as u64,
        sender: row.get::<_, i64>(1) as u64,
        sender_device: row.get(2),
        client_msg_id: row.get(3),
        server_time_ms: row.get::<_, i64>(4) as u64,
        reply_to_seq: row.get::<_, i64>(5) as u64,
        body: Bytes::from(row.get::<_, Vec<u8>>(6)),
        recalled: recalled_by.map(|by| Recall {
            by_user: by as u64,
            at_ms: recalled_at.unwrap_or(0) as u64,
        }),
        mentions: row
            .get::<_, Option<Vec<i64>>>(14)
            .unwrap_or_default()
            .into_iter()
            .map(|u| u as u64)
            .collect(),
        edited,
    }
}
