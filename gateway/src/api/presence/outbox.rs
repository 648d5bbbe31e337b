//! The coalescing step of presence: changes queued for each recipient during one
//! window leave as one `PresenceBatch` frame, holding only the latest state of each
//! user (an offline-then-online within the window is one change, not two).

use std::collections::HashMap;

use bytes::Bytes;
use courier_protocol::encode_frame;
use courier_protocol::pb::{self, frame::Kind, Frame};

/// Changes waiting for the next window, by recipient.
#[derive(Default)]
pub struct Outbox {
    by_recipient: HashMap<u64, Vec<pb::PresenceChange>>,
}

impl Outbox {
    /// Queues `change` for `recipient` until the next flush.
    pub fn queue(&mut self, recipient: u64, change: pb::PresenceChange) {
        self.by_recipient.entry(recipient).or_default().push(change);
    }

    /// Recipients with changes waiting.
    pub fn recipients(&self) -> usize {
        self.by_recipient.len()
    }

    /// Hands each recipient its one encoded frame; returns how many changes did not
    /// need a frame of their own (each recipient's changes beyond its first).
    pub fn flush(&mut self, mut deliver: impl FnMut(u64, &Bytes)) -> u64 {
        let mut coalesced = 0;
        for (recipient, changes) in self.by_recipient.drain() {
            let total = changes.len();
            let mut latest: Vec<pb::PresenceChange> = Vec::with_capacity(total);
            for c in changes {
                match latest.iter_mut().find(|l| l.user_id == c.user_id) {
                    // The latest state, and whether the profile changed on the way.
                    Some(l) => {
                        let profile_changed = l.profile_changed || c.profile_changed;
                        // A profile-only notice never hides a presence state.
                        if !c.profile_only || l.profile_only {
                            *l = c;
                        }
                        l.profile_changed = profile_changed;
                    }
                    None => latest.push(c),
                }
            }
            coalesced += (total - 1) as u64;
            let frame = Frame::new(
                0,
                Kind::PresenceBatch(pb::PresenceBatch { changes: latest }),
            );
            deliver(recipient, &encode_frame(&frame));
        }
        coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_protocol::decode_frame;

    fn change(user: u64, online: bool, at: u64) -> pb::PresenceChange {
        pb::PresenceChange {
            user_id: user,
            online,
            changed_at_ms: at,
            profile_changed: false,
            profile_only: false,
        }
    }

    #[test]
    fn a_profile_only_notice_keeps_the_presence_state_it_meets() {
        let mut outbox = Outbox::default();
        let profile_only = pb::PresenceChange {
            profile_changed: true,
            profile_only: true,
            ..change(7, false, 3)
        };
        outbox.queue(1, change(7, true, 2));
        outbox.queue(1, profile_only);
        outbox.queue(2, profile_only);
        outbox.queue(2, change(7, true, 4));
        let mut frames = Vec::new();
        outbox.flush(|r, f| frames.push((r, f.clone())));
        frames.sort_by_key(|(r, _)| *r);
        for (_, f) in frames {
            let Some(Kind::PresenceBatch(b)) = decode_frame(f.slice(4..)).unwrap().kind else {
                panic!("not a batch")
            };
            let c = &b.changes[0];
            assert!(c.online && c.profile_changed && !c.profile_only, "{c:?}");
        }
    }

    #[test]
    fn one_frame_per_recipient_with_the_latest_state_of_each_user() {
        let mut outbox = Outbox::default();
        outbox.queue(1, change(7, false, 1));
        outbox.queue(1, change(7, true, 2));
        outbox.queue(1, change(8, true, 3));
        outbox.queue(2, change(7, true, 2));
        let mut frames = Vec::new();
        let coalesced = outbox.flush(|r, f| frames.push((r, f.clone())));
        assert_eq!(coalesced, 2);
        frames.sort_by_key(|(r, _)| *r);
        assert_eq!(frames.len(), 2);
        let payload = frames[0].1.slice(4..);
        let Some(Kind::PresenceBatch(batch)) = decode_frame(payload).unwrap().kind else {
            panic!("a presence batch");
        };
        assert_eq!(batch.changes, vec![change(7, true, 2), change(8, true, 3)]);
        assert_eq!(outbox.recipients(), 0);
    }

    /// A profile change merged with a later presence change still says so.
    #[test]
    fn a_profile_change_survives_coalescing() {
        let mut outbox = Outbox::default();
        outbox.queue(
            9,
            pb::PresenceChange {
                profile_changed: true,
                ..change(1, true, 1)
            },
        );
        outbox.queue(9, change(1, false, 2));
        let mut frames = Vec::new();
        outbox.flush(|_, frame| frames.push(frame.clone()));
        let frame = decode_frame(frames[0].slice(4..)).unwrap();
        let Some(Kind::PresenceBatch(batch)) = frame.kind else {
            panic!("{frame:?}")
        };
        assert_eq!(batch.changes.len(), 1);
        assert!(!batch.changes[0].online && batch.changes[0].profile_changed);
    }
}
