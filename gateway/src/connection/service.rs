//! What the connection layer needs from the service behind it, and nothing more.
//!
//! The connection layer moves frames and knows who is connected where; what a frame
//! means is the service's business. It defines the [`Service`] it calls — check a
//! Hello, answer a frame, hear of users coming and going, say whether a credential
//! still holds — and the API layer implements it. The connection layer never imports
//! the API layer; the API layer delivers through the [`crate::connection::registry`]
//! (and, past one node, through whatever else implements delivery).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use courier_protocol::pb::{self, Frame};
use courier_protocol::wire::Inbound;

use crate::config::Config;
use crate::connection::limits::ConnectionBudget;
use crate::connection::registry::{Credential, Registry};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Who is on the other end of a session.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    /// The authenticated user.
    pub user_id: u64,
    /// The device id from Hello.
    pub device_id: Arc<str>,
    /// This session's id.
    pub session_id: u64,
    /// The token that opened it.
    pub credential: SessionCredential,
}

/// The token that opened a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionCredential {
    /// Its hash.
    pub hash: Credential,
    /// When it expires (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// A future that produces the answer to a frame (none: nothing to write back).
pub type Pending = Pin<Box<dyn Future<Output = Option<Frame>> + Send + 'static>>;

/// A boxed future borrowing the service.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the session should do with a frame.
// Lives on the stack between two calls; boxing the reply would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handled {
    /// Write this frame back now.
    Reply(Frame),
    /// Run this future (concurrently with further reads) and write what it returns.
    Later(Pending),
    /// Nothing to answer.
    Nothing,
}

/// The service sessions serve.
pub trait Service: Send + Sync + 'static {
    /// Checks a Hello: who it is, the token that opened the session, and the Welcome
    /// frame; an error ends the connection.
    fn handshake<'a>(
        &'a self,
        hello: &'a pb::Hello,
        session_id: u64,
    ) -> BoxFuture<'a, Result<(SessionCtx, SessionCredential, Frame), ApiError>>;

    /// Handles one frame of an authenticated session. What it does before its future
    /// completes happens in frame order (the session awaits it frame by frame).
    fn on_frame<'a>(self: Arc<Self>, ctx: &'a SessionCtx, frame: Inbound)
        -> BoxFuture<'a, Handled>;

    /// The user's first device on this node came online. The session awaits what it
    /// returns, if anything, before its Welcome goes out (past one node: until the
    /// other nodes know where to route the user's messages).
    fn user_online(&self, user: u64) -> Option<BoxFuture<'static, ()>>;

    /// The user's last device on this node went offline.
    fn user_offline(&self, user: u64);

    /// When the credential stops being valid (ms since the Unix epoch), or `None` if
    /// it is not valid now (revoked, expired).
    fn credential_expires<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Option<u64>>;
}

/// One frame for several users: a committed message's fan-out.
pub struct Fanout<'a> {
    /// The encoded frame, shared by every recipient.
    pub frame: &'a bytes::Bytes,
    /// Who receives it.
    pub users: &'a [u64],
    /// The device that must not (the sender's own), if any.
    pub skip: Option<(u64, &'a str)>,
}

/// How the service reaches devices: queue frames to a user's online devices, end
/// sessions, ask who is online. The in-process [`Registry`] implements it; past one
/// node, the cluster's delivery reaches other nodes' devices as well.
pub trait Delivery: Send + Sync + 'static {
    /// Queues each frame of a committed batch to its users' devices (past one node:
    /// one publication per node that has any of them). `members_changed`: the batch
    /// changed that group's members (past one node: every node drops its member
    /// list before delivering the batch; this node's is dropped already).
    fn push_fanout(&self, batch: &[Fanout<'_>], _members_changed: Option<u64>) {
        for f in batch {
            for &user in f.users {
                self.push_to_user(user, f.frame, f.skip);
            }
        }
    }
    /// Queues `frame` to every online device of `user` except the device `skip`
    /// names; returns how many devices it was queued to.
    fn push_to_user(&self, user: u64, frame: &bytes::Bytes, skip: Option<(u64, &str)>) -> usize;
    /// Ends the session of one device of `user`, telling it `code`.
    fn close_device(&self, user: u64, device_id: &str, code: courier_protocol::ErrorCode);
    /// Ends every session of `user` opened with `credential`.
    fn close_credential(
        &self,
        user: u64,
        credential: &Credential,
        code: courier_protocol::ErrorCode,
    );
    /// Ends every session of `user`.
    fn close_user(&self, user: u64, code: courier_protocol::ErrorCode);
    /// Whether `device_id` of `user` is connected.
    fn device_online(&self, user: u64, device_id: &str) -> bool;
    /// Online devices of `user`.
    fn devices_of(&self, user: u64) -> usize;
    /// Devices online now (all users).
    fn online_devices(&self) -> u64;
    /// Frames queued to devices so far.
    fn deliveries(&self) -> u64;
    /// Pushes that found a device's queue full so far.
    fn slow_consumers(&self) -> u64;
}

impl Delivery for Registry {
    fn push_to_user(&self, user: u64, frame: &bytes::Bytes, skip: Option<(u64, &str)>) -> usize {
        Registry::push_to_user(self, user, frame, skip)
    }
    fn close_device(&self, user: u64, device_id: &str, code: courier_protocol::ErrorCode) {
        Registry::close_device(self, user, device_id, code)
    }
    fn close_credential(
        &self,
        user: u64,
        credential: &Credential,
        code: courier_protocol::ErrorCode,
    ) {
        Registry::close_credential(self, user, credential, code)
    }
    fn close_user(&self, user: u64, code: courier_protocol::ErrorCode) {
        Registry::close_user(self, user, code)
    }
    fn device_online(&self, user: u64, device_id: &str) -> bool {
        Registry::device_online(self, user, device_id)
    }
    fn devices_of(&self, user: u64) -> usize {
        Registry::devices_of(self, user)
    }
    fn online_devices(&self) -> u64 {
        Registry::online_devices(self)
    }
    fn deliveries(&self) -> u64 {
        Registry::deliveries(self)
    }
    fn slow_consumers(&self) -> u64 {
        Registry::slow_consumers(self)
    }
}

/// Everything a listener and its sessions use: the service, who is online, the
/// connection budget, the counters, the settings.
pub struct Connections {
    /// What frames mean.
    pub service: Arc<dyn Service>,
    /// Who is connected where.
    pub registry: Arc<Registry>,
    /// Connection-layer counters.
    pub metrics: Arc<Metrics>,
    /// The process-wide connection budget.
    pub budget: ConnectionBudget,
    /// Timeouts, sizes and limits.
    pub config: Arc<Config>,
}
