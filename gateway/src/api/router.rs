//! Fan-out of committed messages.
//!
//! The store calls [`Router::committed`] from a shard's fan-out thread once a batch
//! is durable, in seq order per conversation. Each message becomes one `Deliver`
//! frame, written once around the stored body bytes (never decoded here); the same
//! `Bytes` is queued to every online device of every recipient (and the sender's
//! other devices) without blocking: a full queue closes that slow device, which
//! catches up by seq when it returns. A group's membership changes reach the router
//! in the same order as its messages.

use std::sync::Arc;

use courier_protocol::wire::{deliver_frame, DeliverHead};
use courier_protocol::ConversationId;
use courier_storage::{CommitListener, MembershipChange, StorageError, StoredMessage};

use crate::api::members::MemberCache;
use crate::connection::service::{Delivery, Fanout};

/// Routes committed messages to online devices.
pub struct Router {
    registry: Arc<dyn Delivery>,
    members: Arc<MemberCache>,
    /// Runs the member cache's loads on a miss: the router is called on the embedded
    /// store's own threads, or on PostgreSQL's committer tasks.
    runtime: tokio::runtime::Handle,
    /// Webhook events of what was committed, when configured.
    events: Option<Arc<crate::api::events::EventOutbox>>,
    /// Push decisions of what was committed, when configured.
    push: Option<Arc<crate::api::push::Push>>,
}

impl Router {
    /// A router over `registry`, with group members from `members`; member loads run
    /// on the current runtime (call it from inside one).
    pub fn new(registry: Arc<dyn Delivery>, members: Arc<MemberCache>) -> Self {
        Self {
            registry,
            members,
            runtime: tokio::runtime::Handle::current(),
            events: None,
            push: None,
        }
    }

    /// Also queues push decisions of what is committed in `push`.
    pub fn with_push(mut self, push: Option<Arc<crate::api::push::Push>>) -> Self {
        self.push = push;
        self
    }

    /// Also queues webhook events of what is committed in `outbox`.
    pub fn with_events(mut self, outbox: Option<Arc<crate::api::events::EventOutbox>>) -> Self {
        self.events = outbox;
        self
    }

    fn members_at(&self, group: u64, seq: u64) -> Result<Arc<[u64]>, StorageError> {
        match self.members.cached_members_at(group, seq) {
            Some(members) => Ok(members),
            // The embedded store calls from its own threads; PostgreSQL's committers
            // from a runtime worker, which must hand its other tasks off first.
            None => match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(|| {
                    self.runtime.block_on(self.members.members_at(group, seq))
                }),
                Err(_) => self.runtime.block_on(self.members.members_at(group, seq)),
            },
        }
    }
}

impl CommitListener for Router {
    fn committed(&self, messages: &[StoredMessage], membership: Option<&MembershipChange>) {
        if let Some(events) = &self.events {
            events.committed(messages);
        }
        if let Some(push) = &self.push {
            push.committed(messages);
        }
        // The batch holds only the change's own events: they and everything after
        // them go to the members as of the change (or later, as `members_at` sorts
        // out), never to an older list.
        if let Some(change) = membership {
            self.members.invalidate(change.group);
        }
        let mut wires = Vec::with_capacity(messages.len());
        for m in messages {
            let wire = deliver_frame(
                &DeliverHead {
                    conversation: m.conversation,
                    seq: m.seq,
                    sender: m.sender,
                    sender_device: &m.sender_device,
                    client_msg_id: &m.client_msg_id,
                    server_time_ms: m.server_time_ms,
                    reply_to_seq: m.reply_to_seq,
                    recalled: m.recalled.map(|r| (r.by_user, r.at_ms)),
                },
                &m.body,
            );
            let users = match m.conversation {
                ConversationId::Direct { low, high } => Users::Pair([low, high]),
                ConversationId::Group(g) => match self.members_at(g, m.seq) {
                    // Who just left learns of it: the event of its removal is the
                    // last message it receives from the group.
                    Ok(members) => Users::Group(
                        members.clone(),
                        membership
                            .iter()
                            .flat_map(|c| &c.removed)
                            .copied()
                            .filter(|gone| members.binary_search(gone).is_err())
                            .collect(),
                    ),
                    Err(e) => {
                        tracing::error!(group = g, error = %e, "cannot load members; fan-out skipped");
                        continue;
                    }
                },
            };
            wires.push((wire, users, m));
        }
        let mut batch = Vec::with_capacity(wires.len() + 1);
        for (wire, users, m) in &wires {
            let skip = Some((m.sender, m.sender_device.as_str()));
            let (first, second) = users.lists();
            batch.push(Fanout {
                frame: wire,
                users: first,
                skip,
            });
            if !second.is_empty() {
                batch.push(Fanout {
                    frame: wire,
                    users: second,
                    skip,
                });
            }
        }
        self.registry
            .push_fanout(&batch, membership.map(|c| c.group));
    }

    fn reopened(&self) {
        self.members.clear();
    }
}

/// Who one committed message goes to.
enum Users {
    /// Both users of a 1:1 conversation.
    Pair([u64; 2]),
    /// A group's members, and who the message's change just removed.
    Group(Arc<[u64]>, Vec<u64>),
}

impl Users {
    fn lists(&self) -> (&[u64], &[u64]) {
        match self {
            Users::Pair(pair) => (pair, &[]),
            Users::Group(members, removed) => (members, removed),
        }
    }
}
