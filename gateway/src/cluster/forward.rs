//! Conversation owners: one node stores and fans out all of a conversation's
//! messages, so they leave for every node in seq order (two nodes committing into
//! one conversation would publish independently, and a device could see seq 6
//! before seq 5).
//!
//! The owner is chosen by rendezvous hashing over the live nodes' names: every node
//! computes the same owner from the same directory, and a node joining or leaving
//! moves only the conversations it wins or held. A send arriving elsewhere is checked
//! there, then forwarded to the owner (`<p>.a.<owner>`), which submits it to its store
//! and answers on `<p>.r.<origin>.<id>` once it is durable. When NATS answers that
//! nobody serves the owner's subject (the owner died and its lease has not run out),
//! the send is stored here instead, in the order it was forwarded; a success is only
//! ever an answer that names a seq. While nodes disagree on
//! who is live (a join, a lease running out), two nodes may store into one
//! conversation for a moment: seqs stay gap-free and unique (the database's lock),
//! only the live order between nodes is not guaranteed then (the SDK's session
//! reorders and fills gaps from history).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Subscriber;
use courier_protocol::cluster::{AppendForward, AppendResult};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, Appended, Storage, StorageError};
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::directory::{slots, SELF};
use super::Cluster;
use crate::error::ApiError;

/// Forwarded sends waiting for their owner's answer.
#[derive(Default)]
pub(super) struct Pending {
    /// By id: who waits, and the send (stored here if its owner is gone).
    waiting: Mutex<HashMap<u64, (oneshot::Sender<Answer>, AppendRequest)>>,
    next: AtomicU64,
}

/// What became of a forwarded send.
enum Answer {
    /// The owner's answer.
    From(AppendResult),
    /// Nobody served the owner's subject (it died; its lease has not run out yet),
    /// so the send was submitted to the store here, in the order the refusals came
    /// back, which is the order the sends were forwarded in.
    Here(Result<courier_storage::AppendTicket, StorageError>),
}

/// FNV-1a: a hash every node computes alike, whatever it was built with.
fn fnv(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The rendezvous score of `node` for the conversation hashed to `key`.
fn score(key: u64, node: &str) -> u64 {
    courier_protocol::conversation::mix(fnv(node.as_bytes(), key))
}

fn conversation_key(c: &ConversationId) -> u64 {
    match *c {
        ConversationId::Direct { low, high } => {
            fnv(&[low.to_le_bytes(), high.to_le_bytes()].concat(), 1)
        }
        ConversationId::Group(g) => fnv(&g.to_le_bytes(), 2),
    }
}

/// An owner's answer as the send's outcome. A success names a seq: an answer
/// without one is not a success, whatever else it says.
fn appended(answer: AppendResult) -> Result<Appended, ApiError> {
    if answer.error_code != 0 || answer.seq == 0 {
        return Err(refused(
            answer.error_code,
            answer.error_message,
            answer.retry_after_ms,
        ));
    }
    Ok(Appended {
        seq: answer.seq,
        server_time_ms: answer.server_time_ms,
        duplicate: answer.duplicate,
    })
}

/// The error another node answered (code 0, which is no error, as INTERNAL).
pub(super) fn refused(code: i32, message: String, retry_after_ms: u64) -> ApiError {
    let code = match code {
        0 => ErrorCode::Internal,
        c => ErrorCode::try_from(c).unwrap_or(ErrorCode::Internal),
    };
    let mut e = ApiError::new(code, message);
    if retry_after_ms > 0 {
        e = e.retry_after(Duration::from_millis(retry_after_ms));
    }
    e
}

pub(super) fn unavailable(why: &str) -> ApiError {
    ApiError::new(ErrorCode::StorageUnavailable, why).retry_after(Duration::from_secs(1))
}

impl Cluster {
    /// The node that owns `c`, when it is not this one.
    pub fn owner_of(&self, c: &ConversationId) -> Option<Arc<str>> {
        if !self.directory.has_peers() {
            return None;
        }
        let key = conversation_key(c);
        let mut best: Option<(u64, usize, Arc<str>)> = None;
        for slot in slots(self.directory.live_slots()) {
            let Some(name) = self.directory.name(slot) else {
                continue;
            };
            let s = score(key, &name);
            if best
                .as_ref()
                .is_none_or(|(b, _, n)| (s, &*name) > (*b, &**n))
            {
                best = Some((s, slot, name));
            }
        }
        match best {
            Some((_, slot, name)) if slot != SELF => Some(name),
            _ => None,
        }
    }

    /// Sends `req` to `owner` now (sends forwarded in order are stored in order);
    /// the future resolves with the owner's answer. When no node serves the owner's
    /// subject (it died; its lease has not run out yet), the send is stored here.
    pub async fn forward_append(
        self: &Arc<Self>,
        owner: &str,
        req: AppendRequest,
    ) -> impl Future<Output = Result<Appended, ApiError>> + Send + 'static {
        let id = self.pending.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let forward = AppendForward {
            conversation: req.conversation.to_string(),
            sender: req.sender,
            sender_device: req.sender_device.clone(),
            client_msg_id: req.client_msg_id.clone(),
            body: req.body.clone(),
            reply_to_seq: req.reply_to_seq,
            recalls: req.recalls,
            mentions: req.mentions.clone(),
            edits: req.edits.map_or(0, |e| e.target),
            edit_keeps_versions: req.edits.is_some_and(|e| e.keep_versions),
        };
        self.pending
            .waiting
            .lock()
            .expect("pending forwards")
            .insert(id, (tx, req));
        let published = self
            .client
            .publish_with_reply(
                self.subjects.append(owner),
                self.subjects.append_reply(&self.node, id),
                forward.encode_to_vec().into(),
            )
            .await;
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let cluster = self.clone();
        let wait = Duration::from_millis(self.config.forward_timeout_ms);
        async move {
            let answer = match published {
                Ok(()) => tokio::time::timeout(wait, rx)
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(_) => None,
            };
            match answer {
                Some(Answer::From(answer)) => appended(answer),
                Some(Answer::Here(ticket)) => Ok(ticket?.wait().await?),
                None => {
                    cluster
                        .pending
                        .waiting
                        .lock()
                        .expect("pending forwards")
                        .remove(&id);
                    cluster
                        .counters
                        .forward_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    Err(unavailable(
                        "the node that stores this conversation did not answer; retry",
                    ))
                }
            }
        }
    }

    /// Serves the sends and group changes other nodes forward to this one
    /// (subscribed since the node joined, so none that came meanwhile is missed),
    /// and hands their answers back to the sends this one forwarded.
    pub fn serve_appends(
        self: &Arc<Self>,
        store: Arc<dyn Storage>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let _ = self.store.set(store.clone());
        let Some(served) = self.served.lock().expect("subscriptions").take() else {
            return;
        };
        *self.reactions_in.lock().expect("subscriptions") = Some(served.reactions);
        tasks.spawn(appends(
            self.clone(),
            served.appends,
            store.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(answers_in(self.clone(), served.answers, shutdown.clone()));
        tasks.spawn(super::group_changes::serve(
            self.clone(),
            served.group_changes,
            store,
            shutdown,
        ));
    }
}

/// The next request on `requests` that says where to answer (others are counted as
/// malformed); `None` at shutdown or when the subscription ends.
pub(super) async fn next_request(
    cluster: &Cluster,
    requests: &mut Subscriber,
    shutdown: &CancellationToken,
) -> Option<(async_nats::Subject, bytes::Bytes)> {
    loop {
        let m = tokio::select! {
            m = requests.next() => m?,
            _ = shutdown.cancelled() => return None,
        };
        match m.reply {
            Some(reply) => return Some((reply, m.payload)),
            None => cluster.counters.malformed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Stores forwarded sends in the order they came, answering each once durable.
async fn appends(
    cluster: Arc<Cluster>,
    mut requests: Subscriber,
    store: Arc<dyn Storage>,
    shutdown: CancellationToken,
) {
    while let Some((reply, payload)) = next_request(&cluster, &mut requests, &shutdown).await {
        let request = AppendForward::decode(payload)
            .ok()
            .and_then(|f| Some((f.conversation.parse::<ConversationId>().ok()?, f)));
        let Some((conversation, f)) = request else {
            cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
            let answer = error_result(ApiError::invalid("malformed forwarded send"));
            let _ = cluster
                .client
                .publish(reply, answer.encode_to_vec().into())
                .await;
            continue;
        };
        let req = AppendRequest {
            conversation,
            sender: f.sender,
            sender_device: f.sender_device,
            client_msg_id: f.client_msg_id,
            body: f.body,
            reply_to_seq: f.reply_to_seq,
            recalls: f.recalls,
            mentions: f.mentions,
            edits: (f.edits != 0).then_some(courier_storage::EditOf {
                target: f.edits,
                keep_versions: f.edit_keeps_versions,
            }),
        };
        let client = cluster.client.clone();
        match store.submit(req).await {
            Ok(ticket) => {
                tokio::spawn(async move {
                    let answer = result_of(ticket.wait().await);
                    let _ = client.publish(reply, answer.encode_to_vec().into()).await;
                });
            }
            Err(e) => {
                let answer = result_of(Err(e));
                let _ = client.publish(reply, answer.encode_to_vec().into()).await;
            }
        }
    }
}

fn result_of(r: Result<Appended, StorageError>) -> AppendResult {
    match r {
        Ok(a) => AppendResult {
            seq: a.seq,
            server_time_ms: a.server_time_ms,
            duplicate: a.duplicate,
            ..Default::default()
        },
        Err(e) => error_result(ApiError::from(e)),
    }
}

fn error_result(e: ApiError) -> AppendResult {
    let (error_code, error_message, retry_after_ms) = refusal_of(e);
    AppendResult {
        error_code,
        error_message,
        retry_after_ms,
        ..Default::default()
    }
}

/// An error as an answer carries it (the inverse of [`refused`]): code, message,
/// retry-after in ms.
pub(super) fn refusal_of(e: ApiError) -> (i32, String, u64) {
    let retry_after_ms = e.retry_after.map_or(0, |d| d.as_millis() as u64);
    (e.code as i32, e.message, retry_after_ms)
}

/// Hands owners' answers to the forwarded sends waiting for them.
async fn answers_in(cluster: Arc<Cluster>, mut answers: Subscriber, shutdown: CancellationToken) {
    loop {
        let m = tokio::select! {
            m = answers.next() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        let id = m
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        let Some(id) = id else {
            cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some((waiter, req)) = cluster
            .pending
            .waiting
            .lock()
            .expect("pending forwards")
            .remove(&id)
        else {
            continue;
        };
        // A status instead of an answer: NATS found no subscriber for the owner's
        // subject (503). Anything else undecodable is not an answer at all.
        let answer = match (m.status, AppendResult::decode(m.payload)) {
            (Some(s), _) if s == async_nats::StatusCode::NO_RESPONDERS => {
                let submitted = match cluster.store.get() {
                    Some(store) => store.submit(req).await,
                    None => Err(StorageError::ShuttingDown),
                };
                Answer::Here(submitted)
            }
            (None, Ok(answer)) => Answer::From(answer),
            _ => {
                cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
                Answer::From(AppendResult::default())
            }
        };
        let _ = waiter.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_and_move_only_with_their_node() {
        let nodes = ["gw0", "gw1", "gw2"];
        fn owner(c: &ConversationId, nodes: &[&'static str]) -> &'static str {
            let key = conversation_key(c);
            nodes.iter().max_by_key(|n| (score(key, n), **n)).unwrap()
        }
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for g in 0..3000u64 {
            let c = ConversationId::Group(g);
            let before = owner(&c, &nodes);
            counts[nodes.iter().position(|n| *n == before).unwrap()] += 1;
            let after = owner(&c, &nodes[..2]);
            if before != "gw2" {
                assert_eq!(
                    before, after,
                    "only gw2's conversations move when it leaves"
                );
            } else {
                moved += 1;
            }
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
        assert_eq!(moved, counts[2]);
    }
}
