//! Fan-out of committed messages.
//!
//! The store calls [`Router::committed`] from a shard writer thread once a batch is
//! durable, in seq order per conversation. Each message becomes one `Deliver` frame,
//! encoded once; the same `Bytes` is queued to every online device of every recipient
//! (and the sender's other devices) without blocking: a full queue closes that slow
//! device, which catches up by seq when it returns.

use std::sync::Arc;

use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{encode_frame, ConversationId};
use courier_storage::{CommitListener, StoredMessage};

use crate::api::convert;
use crate::api::members::MemberCache;
use crate::connection::registry::Registry;

/// Routes committed messages to online devices.
pub struct Router {
    registry: Arc<Registry>,
    members: Arc<MemberCache>,
}

impl Router {
    /// A router over `registry`, with group members from `members`.
    pub fn new(registry: Arc<Registry>, members: Arc<MemberCache>) -> Self {
        Self { registry, members }
    }
}

impl CommitListener for Router {
    fn committed(&self, messages: &[StoredMessage]) {
        for m in messages {
            let frame = Frame::new(
                0,
                Kind::Deliver(pb::Deliver {
                    message: Some(convert::to_pb(m)),
                }),
            );
            let wire = encode_frame(&frame);
            let skip = Some((m.sender, m.sender_device.as_str()));
            match m.conversation {
                ConversationId::Direct { low, high } => {
                    self.registry.push_to_user(low, &wire, skip);
                    self.registry.push_to_user(high, &wire, skip);
                }
                ConversationId::Group(g) => match self.members.members(g) {
                    Ok(members) => {
                        for &member in members.iter() {
                            self.registry.push_to_user(member, &wire, skip);
                        }
                    }
                    Err(e) => {
                        tracing::error!(group = g, error = %e, "cannot load members; fan-out skipped");
                    }
                },
            }
        }
    }
}
