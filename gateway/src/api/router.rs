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
use crate::connection::service::Delivery;

/// Routes committed messages to online devices.
pub struct Router {
    registry: Arc<dyn Delivery>,
    members: Arc<MemberCache>,
    /// Runs the member cache's loads on a miss: the router is called on the store's
    /// own threads, outside the runtime.
    runtime: tokio::runtime::Handle,
}

impl Router {
    /// A router over `registry`, with group members from `members`; member loads run
    /// on the current runtime (call it from inside one).
    pub fn new(registry: Arc<dyn Delivery>, members: Arc<MemberCache>) -> Self {
        Self {
            registry,
            members,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn members_at(&self, group: u64, seq: u64) -> Result<Arc<[u64]>, StorageError> {
        match self.members.cached_members_at(group, seq) {
            Some(members) => Ok(members),
            None => self.runtime.block_on(self.members.members_at(group, seq)),
        }
    }
}

impl CommitListener for Router {
    fn committed(&self, messages: &[StoredMessage], membership: Option<&MembershipChange>) {
        // The batch holds only the change's own events: they and everything after
        // them go to the members as of the change (or later, as `members_at` sorts
        // out), never to an older list.
        if let Some(change) = membership {
            self.members.invalidate(change.group);
        }
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
            let skip = Some((m.sender, m.sender_device.as_str()));
            match m.conversation {
                ConversationId::Direct { low, high } => {
                    self.registry.push_to_user(low, &wire, skip);
                    self.registry.push_to_user(high, &wire, skip);
                }
                ConversationId::Group(g) => match self.members_at(g, m.seq) {
                    Ok(members) => {
                        for &member in members.iter() {
                            self.registry.push_to_user(member, &wire, skip);
                        }
                        // Who just left learns of it: the event of its removal is
                        // the last message it receives from the group.
                        for &gone in membership.iter().flat_map(|c| &c.removed) {
                            if members.binary_search(&gone).is_err() {
                                self.registry.push_to_user(gone, &wire, skip);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(group = g, error = %e, "cannot load members; fan-out skipped");
                    }
                },
            }
        }
    }

    fn reopened(&self) {
        self.members.clear();
    }
}
