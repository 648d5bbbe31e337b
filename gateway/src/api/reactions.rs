//! Reactions: anyone who may see a message may react to it with an emoji (up to
//! `reaction_max_kinds` different ones per message) and take the reaction back.
//!
//! Every change is an event in the conversation's log (a `ReactionsChanged` system
//! event with its own seq, stored in one commit with the change), so a device that
//! syncs from its cursor learns of it. History and sync show each message's counts
//! per emoji, with the reader's own marked; who reacted is paged over HTTP.
//!
//! A popular message in a big group must not become a storm: in groups of more
//! than `reaction_coalesce_members`, the changes of one `reaction_window_ms` (per
//! conversation) share one event — its totals say where every touched message
//! stands, and up to 64 of its changes say who — so a thousand members reacting at
//! once cost the online members a few frames each, not a thousand. Smaller
//! conversations get one event per change at once. Each reacting client is
//! answered when the event carrying its change is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_protocol::pb::{self, message_body::Content, system_event::Event};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{ReactionChange, ReactionCount, ReactionEventFn, Storage};
use prost::Message as _;
use tokio::sync::oneshot;

use crate::api::Api;
use crate::error::ApiError;

/// Most changes one event names (the totals always cover them all).
pub const MAX_NAMED_CHANGES: usize = 64;
/// Most changes one conversation gathers before they are written without waiting
/// for the window to end.
const MAX_GATHERED: usize = 4096;

/// What a reacting client is told: whether its change did anything, and the seq
/// of the event that carries it.
type Outcome = Result<(bool, u64), ApiError>;

/// One gathered change and its waiting client.
struct Waiting {
    change: ReactionChange,
    reply: oneshot::Sender<Outcome>,
}

/// Gathers big groups' reaction changes per conversation for one window each,
/// and counts what comes in and goes out.
pub struct ReactionGate {
    window: Duration,
    gathered: Mutex<HashMap<ConversationId, Vec<Waiting>>>,
    /// Reaction changes asked for.
    pub changes: AtomicU64,
    /// `ReactionsChanged` events stored.
    pub events: AtomicU64,
}

impl ReactionGate {
    /// A gate gathering each big group's changes for `window`.
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            gathered: Mutex::new(HashMap::new()),
            changes: AtomicU64::new(0),
            events: AtomicU64::new(0),
        })
    }

    /// Adds `change` to `c`'s gathering (the first one starts the window); resolves
    /// once the event that carries it is durable.
    async fn gather(
        self: &Arc<Self>,
        store: Arc<dyn Storage>,
        c: ConversationId,
        change: ReactionChange,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let full = {
            let mut gathered = self.gathered.lock().expect("reaction gathering");
            let list = gathered.entry(c).or_default();
            let first = list.is_empty();
            list.push(Waiting { change, reply });
            if list.len() >= MAX_GATHERED {
                gathered.remove(&c)
            } else {
                if first {
                    let gate = self.clone();
                    let store = store.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(gate.window).await;
                        let batch = gate.gathered.lock().expect("reaction gathering").remove(&c);
                        if let Some(batch) = batch {
                            gate.write(store, c, batch).await;
                        }
                    });
                }
                None
            }
        };
        if let Some(batch) = full {
            let gate = self.clone();
            tokio::spawn(async move { gate.write(store, c, batch).await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::GoingAway,
                "the server stopped before the reaction was stored",
            ))
        })
    }

    /// Writes one batch of changes and answers its clients.
    async fn write(&self, store: Arc<dyn Storage>, c: ConversationId, batch: Vec<Waiting>) {
        let changes = batch.iter().map(|w| w.change.clone()).collect();
        let result = store
            .react(&c, changes, event_body())
            .await
            .map_err(ApiError::from);
        if matches!(&result, Ok(r) if r.event.is_some()) {
            self.events.fetch_add(1, Ordering::Relaxed);
        }
        for w in batch {
            let outcome = match &result {
                Ok(r) => Ok((
                    r.effective.contains(&w.change),
                    r.event.map_or(0, |e| e.seq),
                )),
                Err(e) => Err(e.clone()),
            };
            let _ = w.reply.send(outcome);
        }
    }
}

/// Builds a `ReactionsChanged` event from the effective changes and new totals.
fn event_body() -> ReactionEventFn {
    Box::new(|changes, totals| {
        let named = changes.len().min(MAX_NAMED_CHANGES);
        pb::MessageBody {
            content: Some(Content::System(pb::SystemEvent {
                event: Some(Event::ReactionsChanged(pb::ReactionsChanged {
                    changes: changes[..named]
                        .iter()
                        .map(|c| pb::ReactionChange {
                            seq: c.seq,
                            emoji: c.emoji.clone(),
                            user_id: c.user,
                            added: c.added,
                        })
                        .collect(),
                    totals: totals
                        .iter()
                        .map(|t| pb::ReactionTotal {
                            seq: t.seq,
                            emoji: t.emoji.clone(),
                            count: t.count,
                        })
                        .collect(),
                    changes_left_out: (changes.len() - named) as u32,
                })),
            })),
        }
        .encode_to_vec()
        .into()
    })
}

impl Api {
    /// Adds (or with `add` false takes back) `user`'s reaction `emoji` to message
    /// `seq` of `c`; answers once the event carrying it is durable.
    pub async fn react(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        add: bool,
    ) -> Result<pb::ReactAck, ApiError> {
        courier_storage::validate_emoji(emoji)?;
        self.authorize_send(user, c).await?;
        let message = self.visible_message(user, c, seq).await?;
        if message.recalled.is_some() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "the message was recalled",
            ));
        }
        let is_event = message.edited.is_none()
            && pb::MessageBody::decode(message.body.clone())
                .is_ok_and(|b| matches!(b.content, Some(Content::System(_))));
        if is_event {
            return Err(ApiError::invalid("events take no reactions"));
        }
        if add {
            // Enough kinds to tell whether `emoji` is among them when the message
            // is at the limit (the limit is at most 100).
            let kinds = self.store.reaction_kinds(c, seq, 128).await?;
            if kinds.len() >= self.config.reaction_max_kinds && !kinds.iter().any(|k| k == emoji) {
                return Err(ApiError::invalid(format!(
                    "a message takes at most {} different reactions",
                    self.config.reaction_max_kinds
                )));
            }
        }
        let change = ReactionChange {
            seq,
            user,
            emoji: emoji.to_owned(),
            added: add,
        };
        // In a cluster the conversation's owner stores it, so that its event leaves
        // in order with the conversation's messages.
        let forwarded = match self
            .cluster
            .as_ref()
            .and_then(|k| Some((k, k.owner_of(c)?)))
        {
            Some((cluster, owner)) => cluster.forward_reaction(&owner, c, &change).await?,
            None => None,
        };
        let (changed, event_seq) = match forwarded {
            Some(done) => done,
            None => self.store_reaction(c, change).await?,
        };
        Ok(pb::ReactAck {
            conversation: c.to_string(),
            seq,
            emoji: emoji.to_owned(),
            removed: !add,
            changed,
            event_seq,
        })
    }

    /// Stores a checked reaction change (gathered with others in big groups);
    /// answers whether it took effect and the seq of the event that carries it.
    pub(crate) async fn store_reaction(
        &self,
        c: &ConversationId,
        change: ReactionChange,
    ) -> Result<(bool, u64), ApiError> {
        self.reactions.changes.fetch_add(1, Ordering::Relaxed);
        if self.reactions_coalesce(c).await? {
            return self.reactions.gather(self.store.clone(), *c, change).await;
        }
        let reacted = self
            .store
            .react(c, vec![change.clone()], event_body())
            .await?;
        if reacted.event.is_some() {
            self.reactions.events.fetch_add(1, Ordering::Relaxed);
        }
        Ok((
            reacted.effective.contains(&change),
            reacted.event.map_or(0, |e| e.seq),
        ))
    }

    /// Whether `c` is a group big enough to gather its reactions.
    async fn reactions_coalesce(&self, c: &ConversationId) -> Result<bool, ApiError> {
        Ok(match c {
            ConversationId::Direct { .. } => false,
            ConversationId::Group(g) => {
                self.members.members(*g).await?.len() as u64 > self.config.reaction_coalesce_members
            }
        })
    }

    /// The reactions of the messages `messages` (of `c`, ascending) as `user` sees
    /// them, per seq.
    pub async fn reactions_of(
        &self,
        user: u64,
        c: &ConversationId,
        seqs: impl Iterator<Item = u64> + Clone,
    ) -> Result<HashMap<u64, Vec<ReactionCount>>, ApiError> {
        let (Some(from), Some(to)) = (seqs.clone().min(), seqs.max()) else {
            return Ok(HashMap::new());
        };
        let mut out: HashMap<u64, Vec<ReactionCount>> = HashMap::new();
        for r in self.store.reaction_counts(c, from, to, user).await? {
            out.entry(r.seq).or_default().push(r);
        }
        Ok(out)
    }

    /// Who reacted to message `seq` of `c` with `emoji`: user ids above `after`,
    /// ascending, at most `limit` (1..=500), with when.
    pub async fn reactors(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>, ApiError> {
        courier_storage::validate_emoji(emoji)?;
        self.visible_message(user, c, seq).await?;
        Ok(self
            .store
            .reactors(c, seq, emoji, after, limit.clamp(1, 500))
            .await?)
    }
}
