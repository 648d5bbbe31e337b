//! Typing indicators: ephemeral notices, never stored. A `Typing` frame reaches the
//! other participants' online devices (and the sender's other devices) in
//! conversations of at most `typing_max_members`; while a user keeps typing, at
//! most one notice per `typing_interval_ms` per conversation goes out (the rest are
//! dropped here), and receivers clear a notice after `expires_ms` without a renewal,
//! so a client that vanishes mid-sentence stops "typing" by itself. In a 1:1
//! conversation a peer who blocks the sender (or is blocked) is not told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use courier_protocol::pb::{self, Frame};
use courier_protocol::{encode_frame, ConversationId};

use crate::api::Api;
use crate::connection::service::Fanout;
use crate::error::ApiError;

const STRIPES: usize = 16;
/// Entries one stripe keeps before it forgets the stale ones.
const PRUNE_AT: usize = 4096;

/// When each sender last announced typing in each conversation.
type LastNotices = HashMap<(u64, ConversationId), Instant>;

/// The per-sender throttle of typing notices, and their counters.
pub struct TypingGate {
    interval: Duration,
    stripes: Box<[Mutex<LastNotices>]>,
    /// Notices sent (each to every recipient's online devices).
    pub notices: AtomicU64,
    /// `Typing` frames dropped by the throttle.
    pub throttled: AtomicU64,
}

impl TypingGate {
    /// A throttle letting one notice per `interval` through per sender and
    /// conversation.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            notices: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    fn stripe(
        &self,
        user: u64,
    ) -> std::sync::MutexGuard<'_, HashMap<(u64, ConversationId), Instant>> {
        self.stripes[(user as usize) % STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` typing in `c` goes out now (false: one went out within the
    /// interval).
    fn admit(&self, user: u64, c: ConversationId) -> bool {
        let now = Instant::now();
        let mut stripe = self.stripe(user);
        if stripe.len() >= PRUNE_AT {
            stripe.retain(|_, at| now.duration_since(*at) < self.interval);
        }
        match stripe.get(&(user, c)) {
            Some(at) if now.duration_since(*at) < self.interval => false,
            _ => {
                stripe.insert((user, c), now);
                true
            }
        }
    }

    /// `user` stopped typing in `c`: the next start goes out at once. Whether it had
    /// announced typing within the interval (only then is the stop worth telling).
    fn stop(&self, user: u64, c: ConversationId) -> bool {
        self.stripe(user)
            .remove(&(user, c))
            .is_some_and(|at| at.elapsed() < self.interval * 2)
    }
}

impl Api {
    /// `user` (on `device`) is typing in the conversation of `t`, or stopped.
    pub async fn typing(&self, user: u64, device: &str, t: &pb::Typing) -> Result<(), ApiError> {
        let c = self.parse_conversation(&t.conversation)?;
        let recipients: Vec<u64> = match c {
            ConversationId::Direct { .. } => {
                let peer = c
                    .peer_of(user)
                    .ok_or_else(|| ApiError::forbidden("not a participant of this conversation"))?;
                vec![user, peer]
            }
            ConversationId::Group(g) => {
                let members = self.members.members(g).await?;
                if members.binary_search(&user).is_err() {
                    return Err(ApiError::forbidden("not a member of this group"));
                }
                if members.len() > self.config.typing_max_members {
                    return Ok(());
                }
                members.to_vec()
            }
        };
        let announce = match t.active {
            true => self.typing.admit(user, c),
            false => self.typing.stop(user, c),
        };
        if !announce {
            self.typing.throttled.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        // The block check reads the store: only for what passed the throttle.
        if let Some(peer) = c.peer_of(user) {
            let relation = self.store.relation(user, peer).await?;
            if relation.blocking || relation.blocked_by {
                return Ok(());
            }
        }
        let notice = Frame::new(
            0,
            pb::frame::Kind::TypingNotice(pb::TypingNotice {
                conversation: t.conversation.clone(),
                user_id: user,
                active: t.active,
                expires_ms: (self.config.typing_interval_ms * 2) as u32,
            }),
        );
        let frame = encode_frame(&notice);
        self.registry.push_fanout(
            &[Fanout {
                frame: &frame,
                users: &recipients,
                skip: Some((user, device)),
            }],
            None,
        );
        self.typing.notices.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_interval_and_a_stop_lets_the_next_start_through() {
        let gate = TypingGate::new(Duration::from_secs(60));
        let c = ConversationId::Group(7);
        assert!(gate.admit(1, c));
        assert!(!gate.admit(1, c));
        assert!(gate.admit(2, c), "per sender");
        assert!(gate.admit(1, ConversationId::Group(8)), "per conversation");
        assert!(gate.stop(1, c));
        assert!(!gate.stop(1, c), "a second stop says nothing new");
        assert!(gate.admit(1, c));
    }
}
