//! Reactions stored by the node that owns the conversation.
//!
//! A reaction's event takes a seq in the conversation's log. Sends and group
//! changes are made by the conversation's owner, whose commit listener fans them
//! out in log order ([`super::forward`]); a reaction stored elsewhere would have its
//! event fanned out by another node, racing the owner's messages to the devices.
//! So a node that is not the owner checks the reaction (the user may see the
//! message) and sends it to the owner as a NATS request (`<p>.x.<owner>`); the
//! owner stores it as its own users' reactions are stored (gathered per window in
//! big groups, so a storm spread over many nodes still makes few events) and
//! answers with what it did. When nobody serves the owner's subject (it died; its
//! lease has not run out yet), the reaction is stored here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{RequestErrorKind, Subscriber};
use courier_protocol::cluster::{ReactForward, ReactResult};
use courier_protocol::ConversationId;
use courier_storage::ReactionChange;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::{next_request, refusal_of, refused, unavailable};
use super::Cluster;
use crate::api::Api;
use crate::error::ApiError;

/// Forwarded reactions one node stores at once (each may wait a gathering window).
const MAX_SERVED_AT_ONCE: usize = 1024;

impl Cluster {
    /// Has `owner` store `change` to `c`: what it did (whether it took effect, the
    /// seq of its event), or `None` when no node serves the owner's subject any more
    /// (the caller stores it).
    pub async fn forward_reaction(
        &self,
        owner: &str,
        c: &ConversationId,
        change: &ReactionChange,
    ) -> Result<Option<(bool, u64)>, ApiError> {
        let forward = ReactForward {
            conversation: c.to_string(),
            seq: change.seq,
            user: change.user,
            emoji: change.emoji.clone(),
            added: change.added,
        };
        // The owner may hold the change for a gathering window before storing it.
        let timeout = self.config.forward_timeout_ms + 2_000;
        let request = async_nats::Request::new()
            .payload(forward.encode_to_vec().into())
            .timeout(Some(Duration::from_millis(timeout)));
        self.counters
            .reactions_forwarded
            .fetch_add(1, Ordering::Relaxed);
        match self
            .client
            .send_request(self.subjects.reaction(owner), request)
            .await
        {
            Ok(answer) => match ReactResult::decode(answer.payload) {
                Ok(r) if r.error_code != 0 => {
                    Err(refused(r.error_code, r.error_message, r.retry_after_ms))
                }
                Ok(r) => Ok(Some((r.changed, r.event_seq))),
                Err(_) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    Err(ApiError::internal("a malformed answer to a reaction"))
                }
            },
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(None),
            Err(_) => {
                self.counters
                    .forward_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                Err(unavailable(
                    "the node that stores this conversation did not answer; retry",
                ))
            }
        }
    }

    /// Stores the reactions other nodes forward to this one through `api`
    /// (subscribed since the node joined, so none that came meanwhile is missed).
    pub fn serve_reactions(
        self: &Arc<Self>,
        api: Arc<Api>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let Some(requests) = self.reactions_in.lock().expect("subscriptions").take() else {
            return;
        };
        tasks.spawn(serve(self.clone(), requests, api, shutdown));
    }
}

async fn serve(
    cluster: Arc<Cluster>,
    mut requests: Subscriber,
    api: Arc<Api>,
    shutdown: CancellationToken,
) {
    let at_once = Arc::new(Semaphore::new(MAX_SERVED_AT_ONCE));
    while let Some((reply, payload)) = next_request(&cluster, &mut requests, &shutdown).await {
        let Ok(permit) = at_once.clone().acquire_owned().await else {
            break;
        };
        let (cluster, api) = (cluster.clone(), api.clone());
        tokio::spawn(async move {
            let result = match decode(payload) {
                Some((c, change)) => {
                    cluster
                        .counters
                        .reactions_served
                        .fetch_add(1, Ordering::Relaxed);
                    match api.store_reaction(&c, change).await {
                        Ok((changed, event_seq)) => ReactResult {
                            changed,
                            event_seq,
                            ..Default::default()
                        },
                        Err(e) => error_result(e),
                    }
                }
                None => {
                    cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    error_result(ApiError::invalid("malformed forwarded reaction"))
                }
            };
            let _ = cluster
                .client
                .publish(reply, result.encode_to_vec().into())
                .await;
            drop(permit);
        });
    }
}

fn decode(payload: bytes::Bytes) -> Option<(ConversationId, ReactionChange)> {
    let f = ReactForward::decode(payload).ok()?;
    let c = f.conversation.parse().ok()?;
    courier_storage::validate_emoji(&f.emoji).ok()?;
    Some((
        c,
        ReactionChange {
            seq: f.seq,
            user: f.user,
            emoji: f.emoji,
            added: f.added,
        },
    ))
}

fn error_result(e: ApiError) -> ReactResult {
    let (error_code, error_message, retry_after_ms) = refusal_of(e);
    ReactResult {
        error_code,
        error_message,
        retry_after_ms,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_reaction_survives_the_wire_and_bad_ones_do_not() {
        let c = ConversationId::Group(42);
        let f = ReactForward {
            conversation: c.to_string(),
            seq: 7,
            user: 3,
            emoji: "👍".into(),
            added: true,
        };
        let (back, change) = decode(f.encode_to_vec().into()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            change,
            ReactionChange {
                seq: 7,
                user: 3,
                emoji: "👍".into(),
                added: true
            }
        );
        let bad = ReactForward {
            emoji: String::new(),
            ..f.clone()
        };
        assert!(decode(bad.encode_to_vec().into()).is_none());
        let bad = ReactForward {
            conversation: "nonsense".into(),
            ..f
        };
        assert!(decode(bad.encode_to_vec().into()).is_none());
    }
}
