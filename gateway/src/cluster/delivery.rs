//! Delivery past one node: what the API layer pushes reaches devices here directly
//! and devices elsewhere through their node's inbox, one publication per node.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use courier_protocol::cluster::{control, CloseSessions, Control, Deliveries, Delivery};
use courier_protocol::ErrorCode;
use prost::Message;

use super::directory::slots;
use super::Cluster;
use crate::connection::registry::Credential;
use crate::connection::service::{self, Fanout};

/// The methods both views answer alike: devices on other nodes counted from the
/// directory (one per node: it knows nodes, not devices), counters from this node.
macro_rules! common_views {
    () => {
        fn device_online(&self, user: u64, device_id: &str) -> bool {
            // A device on another node reads as offline here.
            self.0.local.device_online(user, device_id)
        }
        fn devices_of(&self, user: u64) -> usize {
            let remote = self.0.directory.remote_slots(user).count_ones() as usize;
            self.0.local.devices_of(user) + remote
        }
        fn online_devices(&self) -> u64 {
            self.0.local.online_devices()
        }
        fn deliveries(&self) -> u64 {
            self.0.local.deliveries()
        }
        fn slow_consumers(&self) -> u64 {
            self.0.local.slow_consumers()
        }
    };
}

/// Reaches devices on every node.
pub struct ClusterDelivery(pub Arc<Cluster>);

/// What presence uses: who is online anywhere, but frames to this node's devices
/// only (every node's presence actor tells its own devices).
pub struct PresenceView(pub Arc<Cluster>);

impl ClusterDelivery {
    fn broadcast_close(&self, user: u64, device: &str, credential: &[u8], code: ErrorCode) {
        let control = Control {
            origin: self.0.node.to_string(),
            action: Some(control::Action::Close(CloseSessions {
                user,
                device: device.to_owned(),
                credential: Bytes::copy_from_slice(credential),
                code: code as i32,
            })),
        };
        self.0
            .publish(self.0.subjects.control(), control.encode_to_vec().into());
    }

    /// Publishes each node's share of `batch` to its inbox (every node's, when the
    /// batch changed a group's members).
    fn publish_remote(&self, batch: &[Fanout<'_>], members_changed: Option<u64>) {
        let cluster = &self.0;
        if !cluster.directory.has_peers() {
            return;
        }
        // The publications being built, by node slot (a few nodes: a short list
        // beats a table of every possible slot, allocated per batch).
        let mut per_node: Vec<(usize, Deliveries)> = Vec::new();
        if let Some(group) = members_changed {
            for slot in slots(cluster.directory.live_slots() & !1) {
                let out = Deliveries {
                    items: Vec::new(),
                    members_changed: group,
                };
                per_node.push((slot, out));
            }
        }
        for f in batch {
            for &user in f.users {
                for slot in slots(cluster.directory.remote_slots(user)) {
                    let at = match per_node.iter().position(|(s, _)| *s == slot) {
                        Some(at) => at,
                        None => {
                            per_node.push((slot, Deliveries::default()));
                            per_node.len() - 1
                        }
                    };
                    let out = &mut per_node[at].1;
                    let fresh = out
                        .items
                        .last()
                        .is_none_or(|last| !last.frame.as_ptr().eq(&f.frame.as_ptr()));
                    if fresh {
                        let (skip_user, skip_device) = f.skip.unwrap_or((0, ""));
                        out.items.push(Delivery {
                            frame: f.frame.clone(),
                            users: Vec::new(),
                            skip_user,
                            skip_device: skip_device.to_owned(),
                        });
                    }
                    out.items.last_mut().expect("pushed").users.push(user);
                }
            }
        }
        for (slot, out) in per_node {
            let Some(node) = cluster.directory.name(slot) else {
                continue;
            };
            cluster
                .counters
                .deliveries_out
                .fetch_add(1, Ordering::Relaxed);
            cluster.publish(
                cluster.subjects.deliveries(&node),
                out.encode_to_vec().into(),
            );
        }
    }
}

impl service::Delivery for ClusterDelivery {
    fn push_fanout(&self, batch: &[Fanout<'_>], members_changed: Option<u64>) {
        for f in batch {
            for &user in f.users {
                self.0.local.push_to_user(user, f.frame, f.skip);
            }
        }
        self.publish_remote(batch, members_changed);
    }

    fn push_to_user(&self, user: u64, frame: &Bytes, skip: Option<(u64, &str)>) -> usize {
        let users = [user];
        let fanout = Fanout {
            frame,
            users: &users,
            skip,
        };
        self.publish_remote(std::slice::from_ref(&fanout), None);
        let remote = self.0.directory.remote_slots(user).count_ones() as usize;
        self.0.local.push_to_user(user, frame, skip) + remote
    }

    fn close_device(&self, user: u64, device_id: &str, code: ErrorCode) {
        self.0.local.close_device(user, device_id, code);
        self.broadcast_close(user, device_id, &[], code);
    }

    fn close_credential(&self, user: u64, credential: &Credential, code: ErrorCode) {
        self.0.local.close_credential(user, credential, code);
        self.broadcast_close(user, "", credential, code);
    }

    fn close_user(&self, user: u64, code: ErrorCode) {
        self.0.local.close_user(user, code);
        self.broadcast_close(user, "", &[], code);
    }

    common_views!();
}

impl service::Delivery for PresenceView {
    fn push_to_user(&self, user: u64, frame: &Bytes, skip: Option<(u64, &str)>) -> usize {
        self.0.local.push_to_user(user, frame, skip)
    }
    fn close_device(&self, user: u64, device_id: &str, code: ErrorCode) {
        self.0.local.close_device(user, device_id, code)
    }
    fn close_credential(&self, user: u64, credential: &Credential, code: ErrorCode) {
        self.0.local.close_credential(user, credential, code)
    }
    fn close_user(&self, user: u64, code: ErrorCode) {
        self.0.local.close_user(user, code)
    }
    common_views!();
}
