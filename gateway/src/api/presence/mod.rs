//! Presence that survives storms.
//!
//! One actor task owns all presence state. Sessions report edges only — a user's
//! first device coming online, its last device going offline — and the actor:
//! - debounces: an offline edge is held for `presence_grace_ms`; if the user is back
//!   by then, neither edge is announced (a flapping weak-network client is silent);
//! - targets: changes go only to online friends (mutual friends by default), never
//!   across a block;
//! - bounds: a user with more than `presence_push_max_friends` such friends is
//!   pull-only — nobody is pushed its changes; friends ask (`GET /v1/presence`) or
//!   subscribe with a lease (`PresenceSubscribe`) while a chat is open;
//! - coalesces: changes for one recipient within `presence_window_ms` leave as one
//!   `PresenceBatch` frame.
//!
//! Counters say how many events came in, how many frames went out, and how many
//! events each mechanism suppressed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod outbox;
pub use outbox::Outbox;
use std::sync::Arc;
use std::time::Duration;

use courier_protocol::pb;
use courier_storage::{RelationSet, Storage};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::connection::service::Delivery;

/// Most users one subscription may watch.
pub const MAX_SUBSCRIBE_TARGETS: usize = 256;
/// Most users one user may watch at once through subscriptions (all its sessions
/// together); targets past it are not watched until earlier leases run out.
pub const MAX_WATCHED_PER_USER: usize = 1_000;

/// What the presence machinery did so far.
#[derive(Debug, Default)]
pub struct PresenceCounters {
    /// Online/offline edges reported by sessions.
    pub events_in: AtomicU64,
    /// Edges dropped because the actor's queue was full.
    pub events_dropped: AtomicU64,
    /// Edges never announced because the user came back within the grace period.
    pub suppressed_debounced: AtomicU64,
    /// Per-recipient changes not sent because the friend was offline.
    pub suppressed_offline: AtomicU64,
    /// Announcements not pushed because the user is pull-only (too many friends).
    pub suppressed_pull_only: AtomicU64,
    /// Changes merged into another change's frame (same recipient, same window).
    pub suppressed_coalesced: AtomicU64,
    /// Changes queued for recipients.
    pub changes_out: AtomicU64,
    /// PresenceBatch frames queued to devices.
    pub frames_out: AtomicU64,
    /// Subscription targets refused: the subscriber watched its maximum already.
    pub subscriptions_refused: AtomicU64,
}

/// A snapshot of [`PresenceCounters`].
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PresenceStats {
    /// Online/offline edges reported by sessions.
    pub events_in: u64,
    /// Edges dropped on a full queue.
    pub events_dropped: u64,
    /// Edges suppressed by the grace period.
    pub suppressed_debounced: u64,
    /// Changes not sent to offline friends.
    pub suppressed_offline: u64,
    /// Announcements of pull-only users.
    pub suppressed_pull_only: u64,
    /// Changes merged into a shared frame.
    pub suppressed_coalesced: u64,
    /// Changes queued for recipients.
    pub changes_out: u64,
    /// Frames queued to devices.
    pub frames_out: u64,
    /// Subscription targets refused past the per-user maximum.
    pub subscriptions_refused: u64,
}

impl PresenceCounters {
    /// The current values.
    pub fn snapshot(&self) -> PresenceStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PresenceStats {
            events_in: get(&self.events_in),
            events_dropped: get(&self.events_dropped),
            suppressed_debounced: get(&self.suppressed_debounced),
            suppressed_offline: get(&self.suppressed_offline),
            suppressed_pull_only: get(&self.suppressed_pull_only),
            suppressed_coalesced: get(&self.suppressed_coalesced),
            changes_out: get(&self.changes_out),
            frames_out: get(&self.frames_out),
            subscriptions_refused: get(&self.subscriptions_refused),
        }
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

enum Input {
    Online(u64),
    Offline(u64),
    /// The user's profile changed: its presence audience is told, coalesced, and
    /// so are `members` (fellow group members) that are online.
    Profile {
        user: u64,
        members: Vec<u64>,
    },
    Subscribe {
        subscriber: u64,
        targets: Vec<u64>,
        lease: Duration,
    },
}

/// The sessions' and API's handle to the presence actor.
#[derive(Clone)]
pub struct Presence {
    tx: mpsc::Sender<Input>,
    /// What it did so far.
    pub counters: Arc<PresenceCounters>,
}

impl Presence {
    /// Starts the actor; it stops when `shutdown` fires.
    pub fn start(
        config: &Config,
        registry: Arc<dyn Delivery>,
        store: Arc<dyn Storage>,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(config.presence_queue.max(1));
        let counters = Arc::new(PresenceCounters::default());
        let actor = Actor {
            rx,
            registry,
            store,
            counters: counters.clone(),
            grace: Duration::from_millis(config.presence_grace_ms),
            window: Duration::from_millis(config.presence_window_ms.max(1)),
            max_friends: config.presence_push_max_friends,
            notify_followers: config.presence_notify_followers,
            pending_offline: HashMap::new(),
            announced_online: HashMap::new(),
            outbox: Outbox::default(),
            subscriptions: HashMap::new(),
            watching: HashMap::new(),
        };
        (Self { tx, counters }, actor.run(shutdown))
    }

    /// `user`'s first device came online.
    pub fn online(&self, user: u64) {
        self.send(Input::Online(user));
    }

    /// `user`'s last device went offline.
    pub fn offline(&self, user: u64) {
        self.send(Input::Offline(user));
    }

    /// `user`'s profile changed: its online friends (and lease subscribers) learn
    /// of it in their next coalesced `PresenceBatch` (`profile_changed`), and so do
    /// the online ones of `members` (fellow group members), without its presence
    /// (`profile_only`).
    pub fn profile_changed(&self, user: u64, members: Vec<u64>) {
        self.send(Input::Profile { user, members });
    }

    /// `subscriber` watches `targets` for `lease` (pull-only users included).
    pub fn subscribe(&self, subscriber: u64, mut targets: Vec<u64>, lease: Duration) {
        targets.truncate(MAX_SUBSCRIBE_TARGETS);
        self.send(Input::Subscribe {
            subscriber,
            targets,
            lease,
        });
    }

    fn send(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            add(&self.counters.events_dropped, 1);
        }
    }
}

struct Actor {
    rx: mpsc::Receiver<Input>,
    registry: Arc<dyn Delivery>,
    store: Arc<dyn Storage>,
    counters: Arc<PresenceCounters>,
    grace: Duration,
    window: Duration,
    max_friends: usize,
    notify_followers: bool,
    /// Users whose last device left, with the end of their grace period.
    pending_offline: HashMap<u64, Instant>,
    /// Users whose friends were told they are online.
    announced_online: HashMap<u64, ()>,
    /// Changes waiting for the next window.
    outbox: Outbox,
    /// Watched user -> subscriber -> lease end.
    subscriptions: HashMap<u64, HashMap<u64, Instant>>,
    /// Subscriber -> how many users it watches (bounded by MAX_WATCHED_PER_USER).
    watching: HashMap<u64, usize>,
}

impl Actor {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = interval(self.window);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(input) = self.rx.recv() => self.input(input).await,
                _ = tick.tick() => self.tick().await,
            }
        }
    }

    async fn input(&mut self, input: Input) {
        match input {
            Input::Online(user) => {
                add(&self.counters.events_in, 1);
                if self.pending_offline.remove(&user).is_some() {
                    // Back within the grace period: neither edge is announced.
                    add(&self.counters.suppressed_debounced, 2);
                } else if self.announced_online.contains_key(&user) {
                    add(&self.counters.suppressed_debounced, 1);
                } else {
                    self.announce(user, true).await;
                }
            }
            Input::Offline(user) => {
                add(&self.counters.events_in, 1);
                self.pending_offline
                    .insert(user, Instant::now() + self.grace);
            }
            Input::Profile { user, members } => {
                add(&self.counters.events_in, 1);
                let online = self.announced_online.contains_key(&user);
                let update = pb::PresenceChange {
                    profile_changed: true,
                    ..change(user, online)
                };
                self.broadcast(user, update).await;
                // Fellow members hear of the profile alone (a friend among them gets
                // its presence too: the outbox keeps the fuller change).
                let profile_only = pb::PresenceChange {
                    online: false,
                    profile_only: true,
                    ..update
                };
                for member in members {
                    if member == user {
                        continue;
                    }
                    if self.registry.devices_of(member) > 0 {
                        self.queue(member, profile_only);
                    } else {
                        add(&self.counters.suppressed_offline, 1);
                    }
                }
            }
            Input::Subscribe {
                subscriber,
                targets,
                lease,
            } => {
                let until = Instant::now() + lease;
                for target in targets {
                    // Who may see whom is checked before a subscription gets here.
                    if target == subscriber {
                        continue;
                    }
                    let watched = self.watching.entry(subscriber).or_default();
                    let subs = self.subscriptions.entry(target).or_default();
                    if !subs.contains_key(&subscriber) {
                        if *watched >= MAX_WATCHED_PER_USER {
                            add(&self.counters.subscriptions_refused, 1);
                            continue;
                        }
                        *watched += 1;
                    }
                    subs.insert(subscriber, until);
                    // The current state at once, then changes for the lease.
                    let online = self.registry.devices_of(target) > 0
                        || self.pending_offline.contains_key(&target);
                    self.queue(subscriber, change(target, online));
                }
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .pending_offline
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(user, _)| *user)
            .collect();
        for user in due {
            self.pending_offline.remove(&user);
            if self.registry.devices_of(user) == 0 {
                self.announce(user, false).await;
            }
        }
        let watching = &mut self.watching;
        self.subscriptions.retain(|_, subs| {
            subs.retain(|subscriber, until| {
                let live = *until > now;
                if !live {
                    if let Some(n) = watching.get_mut(subscriber) {
                        *n = n.saturating_sub(1);
                    }
                }
                live
            });
            !subs.is_empty()
        });
        watching.retain(|_, n| *n > 0);
        self.flush();
    }

    /// Queues `user`'s change for its online friends (and lease subscribers).
    async fn announce(&mut self, user: u64, online: bool) {
        if online {
            self.announced_online.insert(user, ());
        } else {
            self.announced_online.remove(&user);
        }
        self.broadcast(user, change(user, online)).await;
    }

    /// Queues `update` (about `user`) for its online friends and lease subscribers.
    async fn broadcast(&mut self, user: u64, update: pb::PresenceChange) {
        let audience = RelationSet::PresenceAudience {
            followers: self.notify_followers,
        };
        let friends = self
            .store
            .relations(user, 0, self.max_friends + 1, audience)
            .await;
        match friends {
            Ok(friends) if friends.len() > self.max_friends => {
                add(&self.counters.suppressed_pull_only, 1);
            }
            Ok(friends) => {
                for (friend, _) in friends {
                    if self.registry.devices_of(friend) > 0 {
                        self.queue(friend, update);
                    } else {
                        add(&self.counters.suppressed_offline, 1);
                    }
                }
            }
            Err(e) => tracing::error!(user, error = %e, "cannot read friends for presence"),
        }
        let now = Instant::now();
        let subscribers: Vec<u64> = self
            .subscriptions
            .get(&user)
            .map(|s| {
                s.iter()
                    .filter(|(_, u)| **u > now)
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default();
        for s in subscribers {
            self.queue(s, update);
        }
    }

    fn queue(&mut self, recipient: u64, update: pb::PresenceChange) {
        add(&self.counters.changes_out, 1);
        self.outbox.queue(recipient, update);
    }

    fn flush(&mut self) {
        let registry = &self.registry;
        let mut frames = 0;
        let coalesced = self.outbox.flush(|recipient, frame| {
            frames += registry.push_to_user(recipient, frame, None);
        });
        add(&self.counters.suppressed_coalesced, coalesced);
        add(&self.counters.frames_out, frames as u64);
    }
}

fn change(user: u64, online: bool) -> pb::PresenceChange {
    pb::PresenceChange {
        user_id: user,
        online,
        changed_at_ms: courier_storage::now_ms(),
        profile_changed: false,
        profile_only: false,
    }
}
