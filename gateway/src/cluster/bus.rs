//! The cluster's tasks on NATS: the publisher, the inbox (frames from other nodes
//! for this node's devices) and the control loop, which owns the directory protocol
//! (deltas, acknowledgements, heartbeats and leases, snapshots) and applies
//! broadcast control messages.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use courier_protocol::cluster::{
    control, Control, Deliveries, DirectoryAck, DirectoryDelta, Heartbeat, Snapshot,
    SnapshotRequest,
};
use courier_protocol::ErrorCode;
use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::directory::{Edge, MAX_NODES, SELF};
use super::Cluster;

/// Users per snapshot chunk (a chunk stays well under NATS's 1 MiB payload).
const SNAPSHOT_CHUNK: usize = 50_000;
/// Deltas kept from a node while its snapshot is awaited; past it they are dropped
/// and the snapshot asked for again.
const MAX_BUFFERED_DELTAS: usize = 4096;

/// Sends queued publications in order.
pub(super) async fn publish(
    client: async_nats::Client,
    mut queued: mpsc::Receiver<(String, Bytes)>,
    shutdown: CancellationToken,
) {
    loop {
        let (subject, payload) = tokio::select! {
            next = queued.recv() => match next {
                Some(next) => next,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        if let Err(e) = client.publish(subject, payload).await {
            tracing::warn!(error = %e, "cluster publication failed");
        }
    }
}

/// Pushes frames other nodes sent for this node's devices.
pub(super) async fn deliveries(
    cluster: Arc<Cluster>,
    mut inbox: Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            next = inbox.next() => match next {
                Some(m) => m,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(batch) = Deliveries::decode(message.payload) else {
            cluster.counters.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        cluster
            .counters
            .deliveries_in
            .fetch_add(1, Ordering::Relaxed);
        if batch.members_changed != 0 {
            cluster.members.invalidate(batch.members_changed);
        }
        for item in &batch.items {
            let skip = (item.skip_user != 0 || !item.skip_device.is_empty())
                .then_some((item.skip_user, item.skip_device.as_str()));
            for &user in &item.users {
                cluster.local.push_to_user(user, &item.frame, skip);
            }
        }
    }
}

/// What this node knows of another.
struct Peer {
    slot: usize,
    epoch: u64,
    /// Its last delta applied here.
    applied: u64,
    /// Whether its snapshot has been installed (deltas apply in order from there).
    synced: bool,
    /// Deltas that arrived while its snapshot was awaited.
    buffered: Vec<DirectoryDelta>,
    /// Snapshot chunks received so far: (seq, users).
    snapshot: Option<(u64, HashSet<u64>)>,
    /// When the snapshot was last asked for.
    asked: Option<Instant>,
    last_heard: Instant,
    /// This node's deltas it has acknowledged (in this node's epoch).
    acked: u64,
}

/// A delta of this node's waiting for acknowledgements.
struct Outstanding {
    seq: u64,
    deadline: Instant,
    waiters: Vec<oneshot::Sender<()>>,
}

/// The directory protocol's state, owned by one task.
pub(super) struct ControlLoop {
    cluster: Arc<Cluster>,
    epoch: u64,
    /// This node's last delta.
    seq: u64,
    peers: HashMap<Arc<str>, Peer>,
    outstanding: VecDeque<Outstanding>,
}

impl ControlLoop {
    pub(super) fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            epoch: rand::random::<u64>() | 1,
            seq: 0,
            peers: HashMap::new(),
            outstanding: VecDeque::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut broadcasts: Subscriber,
        mut direct: Subscriber,
        shutdown: CancellationToken,
    ) {
        let config = self.cluster.config.clone();
        let tick_every = Duration::from_millis(config.heartbeat_ms.clamp(10, 100));
        let mut tick = interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let heartbeat_every = Duration::from_millis(config.heartbeat_ms);
        self.heartbeat(true, false).await;
        let mut last_heartbeat = Instant::now();
        self.publish_synced();
        loop {
            tokio::select! {
                m = broadcasts.next() => match m {
                    Some(m) => self.on_broadcast(m).await,
                    None => break,
                },
                m = direct.next() => match m {
                    Some(m) => self.on_direct(m).await,
                    None => break,
                },
                _ = self.cluster.wake.notified() => self.announce().await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now >= last_heartbeat + heartbeat_every {
                        self.heartbeat(false, false).await;
                        last_heartbeat = now;
                    }
                    self.expire(now);
                    self.ask_again(now).await;
                    self.resolve(now);
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Leaving: the others forget this node's devices now, not at lease end.
        self.heartbeat(false, true).await;
        let _ = self.cluster.client.flush().await;
        for o in self.outstanding.drain(..) {
            drop(o.waiters);
        }
    }

    async fn send(&self, subject: String, payload: Vec<u8>) {
        if let Err(e) = self.cluster.client.publish(subject, payload.into()).await {
            tracing::warn!(error = %e, "cluster control publication failed");
        }
    }

    async fn heartbeat(&self, hello: bool, leaving: bool) {
        let hb = Heartbeat {
            node: self.cluster.node.to_string(),
            epoch: self.epoch,
            seq: self.seq,
            hello,
            leaving,
        };
        self.send(self.cluster.subjects.heartbeats(), hb.encode_to_vec())
            .await;
    }

    /// Broadcasts local changes as the next delta.
    async fn announce(&mut self) {
        let (changes, waiters) = {
            let mut a = self.cluster.announce.lock().expect("cluster announce");
            (
                std::mem::take(&mut a.changes),
                std::mem::take(&mut a.waiters),
            )
        };
        if changes.is_empty() && waiters.is_empty() {
            return;
        }
        self.seq += 1;
        let mut delta = DirectoryDelta {
            node: self.cluster.node.to_string(),
            epoch: self.epoch,
            seq: self.seq,
            ..Default::default()
        };
        for (user, online) in changes {
            match online {
                true => delta.online.push(user),
                false => delta.offline.push(user),
            }
        }
        self.send(self.cluster.subjects.deltas(), delta.encode_to_vec())
            .await;
        self.cluster
            .counters
            .deltas_out
            .fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_millis(self.cluster.config.ack_timeout_ms);
        self.outstanding.push_back(Outstanding {
            seq: self.seq,
            deadline,
            waiters,
        });
        self.resolve(Instant::now());
    }

    /// Releases the waiters of deltas every live node has acknowledged (or whose
    /// time is up).
    fn resolve(&mut self, now: Instant) {
        while let Some(front) = self.outstanding.front() {
            let known = self.peers.values().all(|p| p.acked >= front.seq);
            if !known && now < front.deadline {
                break;
            }
            if !known {
                self.cluster
                    .counters
                    .ack_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                let missing: Vec<&str> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.acked < front.seq)
                    .map(|(n, _)| &**n)
                    .collect();
                tracing::warn!(
                    ?missing,
                    seq = front.seq,
                    "directory delta not acknowledged in time"
                );
            }
            let done = self.outstanding.pop_front().expect("front exists");
            for w in done.waiters {
                let _ = w.send(());
            }
        }
    }

    fn report(&self, user: u64, edge: Option<Edge>) {
        self.cluster.edge(user, edge);
    }

    /// The peer named `node` in `epoch`, created (or reset, when it restarted) as
    /// needed; `None` when every slot is taken.
    fn peer(&mut self, node: &str, epoch: u64, now: Instant) -> Option<&mut Peer> {
        if node == &*self.cluster.node || node.is_empty() {
            return None;
        }
        if self.peers.get(node).is_some_and(|p| p.epoch != epoch) {
            tracing::info!(node, "node restarted");
            self.drop_peer(node);
        }
        if !self.peers.contains_key(node) {
            let Some(slot) = self.cluster.directory.add_node(node) else {
                tracing::error!(node, max = MAX_NODES, "too many nodes; ignoring one");
                return None;
            };
            tracing::info!(node, "node joined");
            self.peers.insert(
                Arc::from(node),
                Peer {
                    slot,
                    epoch,
                    applied: 0,
                    synced: false,
                    buffered: Vec::new(),
                    snapshot: None,
                    asked: None,
                    last_heard: now,
                    acked: 0,
                },
            );
            self.count_nodes();
        }
        self.peers.get_mut(node)
    }

    fn count_nodes(&self) {
        self.cluster
            .counters
            .nodes
            .store(self.peers.len() as u64, Ordering::Relaxed);
    }

    fn drop_peer(&mut self, node: &str) {
        if let Some(peer) = self.peers.remove(node) {
            for user in self.cluster.directory.remove_node(peer.slot) {
                self.report(user, Some(Edge::Offline));
            }
            self.count_nodes();
        }
    }

    /// Drops nodes whose lease ran out.
    fn expire(&mut self, now: Instant) {
        let lease = Duration::from_millis(self.cluster.config.lease_ms);
        let gone: Vec<Arc<str>> = self
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_heard) > lease)
            .map(|(n, _)| n.clone())
            .collect();
        for node in gone {
            tracing::warn!(node = %node, "node's lease ran out; dropping its devices");
            self.cluster
                .counters
                .nodes_expired
                .fetch_add(1, Ordering::Relaxed);
            self.drop_peer(&node);
        }
    }

    /// Asks again for snapshots that did not come.
    async fn ask_again(&mut self, now: Instant) {
        let patience = Duration::from_millis(self.cluster.config.ack_timeout_ms * 2);
        let late: Vec<Arc<str>> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.synced && p.asked.is_none_or(|at| now.duration_since(at) > patience)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in late {
            self.ask_snapshot(&node, now).await;
        }
    }

    async fn ask_snapshot(&mut self, node: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        peer.synced = false;
        peer.snapshot = None;
        peer.asked = Some(now);
        self.cluster
            .counters
            .snapshots_requested
            .fetch_add(1, Ordering::Relaxed);
        let request = SnapshotRequest {
            node: self.cluster.node.to_string(),
        };
        let subject = self.cluster.subjects.snapshot_request(node);
        self.send(subject, request.encode_to_vec()).await;
        self.publish_synced();
    }

    /// Tells `Cluster::start` whether every known node's entries are installed.
    fn publish_synced(&self) {
        let synced = self.peers.values().all(|p| p.synced);
        self.cluster.synced.send_replace(synced);
    }

    async fn ack(&self, node: &str, epoch: u64, seq: u64) {
        let ack = DirectoryAck {
            node: self.cluster.node.to_string(),
            of: node.to_owned(),
            epoch,
            seq,
        };
        self.send(self.cluster.subjects.ack(node), ack.encode_to_vec())
            .await;
    }

    async fn on_broadcast(&mut self, m: Message) {
        let subject = m.subject.as_str();
        let now = Instant::now();
        if subject == self.cluster.subjects.deltas() {
            match DirectoryDelta::decode(m.payload) {
                Ok(delta) => self.on_delta(delta, now).await,
                Err(_) => self.malformed(),
            }
        } else if subject == self.cluster.subjects.heartbeats() {
            match Heartbeat::decode(m.payload) {
                Ok(hb) => self.on_heartbeat(hb, now).await,
                Err(_) => self.malformed(),
            }
        } else if subject == self.cluster.subjects.control() {
            match Control::decode(m.payload) {
                Ok(c) => self.on_control(c),
                Err(_) => self.malformed(),
            }
        }
    }

    fn malformed(&self) {
        self.cluster
            .counters
            .malformed
            .fetch_add(1, Ordering::Relaxed);
    }

    async fn on_heartbeat(&mut self, hb: Heartbeat, now: Instant) {
        if hb.node == *self.cluster.node {
            return;
        }
        if hb.leaving {
            tracing::info!(node = %hb.node, "node left");
            self.drop_peer(&hb.node);
            self.resolve(now);
            self.publish_synced();
            return;
        }
        if hb.hello {
            // A node joining learns of this one at once.
            self.heartbeat(false, false).await;
        }
        let Some(peer) = self.peer(&hb.node, hb.epoch, now) else {
            return;
        };
        peer.last_heard = now;
        // Heartbeats follow the node's deltas on one subscription: one ahead of
        // what is applied means a delta was lost.
        let behind = peer.synced && hb.seq > peer.applied;
        let fresh = !peer.synced && peer.asked.is_none();
        if behind || fresh {
            self.ask_snapshot(&hb.node, now).await;
        }
    }

    async fn on_delta(&mut self, delta: DirectoryDelta, now: Instant) {
        let node = delta.node.clone();
        let Some(peer) = self.peer(&node, delta.epoch, now) else {
            return;
        };
        peer.last_heard = now;
        if !peer.synced {
            let asked = peer.asked.is_some();
            if peer.buffered.len() < MAX_BUFFERED_DELTAS {
                peer.buffered.push(delta);
            } else {
                peer.buffered.clear();
                peer.asked = None;
            }
            if !asked {
                self.ask_snapshot(&node, now).await;
            }
            return;
        }
        if delta.seq <= peer.applied {
            return;
        }
        if delta.seq > peer.applied + 1 {
            tracing::warn!(node = %node, applied = peer.applied, got = delta.seq, "directory delta lost; asking for a snapshot");
            peer.buffered.push(delta);
            self.ask_snapshot(&node, now).await;
            return;
        }
        let (slot, epoch, seq) = (peer.slot, delta.epoch, delta.seq);
        peer.applied = seq;
        self.apply(slot, &delta);
        self.ack(&node, epoch, seq).await;
    }

    fn apply(&self, slot: usize, delta: &DirectoryDelta) {
        let directory = &self.cluster.directory;
        for &user in &delta.online {
            self.report(user, directory.set(user, slot, true));
        }
        for &user in &delta.offline {
            self.report(user, directory.set(user, slot, false));
        }
        self.cluster
            .counters
            .deltas_in
            .fetch_add(1, Ordering::Relaxed);
    }

    async fn on_direct(&mut self, m: Message) {
        let subject = m.subject.as_str();
        let now = Instant::now();
        let node = &*self.cluster.node;
        if subject == self.cluster.subjects.ack(node) {
            let Ok(ack) = DirectoryAck::decode(m.payload) else {
                return self.malformed();
            };
            if ack.epoch != self.epoch {
                return;
            }
            if let Some(peer) = self.peers.get_mut(ack.node.as_str()) {
                peer.acked = peer.acked.max(ack.seq);
                peer.last_heard = now;
            }
            self.resolve(now);
        } else if subject == self.cluster.subjects.snapshot_request(node) {
            let Ok(request) = SnapshotRequest::decode(m.payload) else {
                return self.malformed();
            };
            self.serve_snapshot(&request.node).await;
        } else if subject == self.cluster.subjects.snapshot_reply(node) {
            let Ok(chunk) = Snapshot::decode(m.payload) else {
                return self.malformed();
            };
            self.on_snapshot(chunk, now).await;
        }
    }

    async fn serve_snapshot(&self, to: &str) {
        if to.is_empty() || to.contains(['.', '*', '>', ' ']) {
            return self.malformed();
        }
        let users = self.cluster.directory.users_on(SELF);
        let subject = self.cluster.subjects.snapshot_reply(to);
        let mut chunks = users.chunks(SNAPSHOT_CHUNK).peekable();
        if chunks.peek().is_none() {
            let empty = self.snapshot_chunk(Vec::new(), true);
            self.send(subject.clone(), empty).await;
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let chunk = self.snapshot_chunk(chunk.to_vec(), last);
            self.send(subject.clone(), chunk).await;
        }
        self.cluster
            .counters
            .snapshots_served
            .fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot_chunk(&self, users: Vec<u64>, last: bool) -> Vec<u8> {
        Snapshot {
            node: self.cluster.node.to_string(),
            epoch: self.epoch,
            seq: self.seq,
            users,
            last,
        }
        .encode_to_vec()
    }

    async fn on_snapshot(&mut self, chunk: Snapshot, now: Instant) {
        let node = chunk.node.clone();
        let Some(peer) = self.peer(&node, chunk.epoch, now) else {
            return;
        };
        peer.last_heard = now;
        if peer.synced {
            // An answer to a request superseded by a later one that already came.
            if chunk.seq <= peer.applied {
                return;
            }
        }
        let (seq, users) = peer
            .snapshot
            .get_or_insert_with(|| (chunk.seq, HashSet::new()));
        if *seq != chunk.seq {
            // Chunks of two answers mixed: start over with this one.
            *seq = chunk.seq;
            users.clear();
        }
        users.extend(chunk.users);
        if !chunk.last {
            return;
        }
        let (seq, users) = peer.snapshot.take().expect("snapshot in progress");
        let slot = peer.slot;
        let buffered = std::mem::take(&mut peer.buffered);
        peer.synced = true;
        peer.asked = None;
        peer.applied = seq;
        let (came, gone) = self.cluster.directory.replace_slot(slot, &users);
        for user in came {
            self.report(user, Some(Edge::Online));
        }
        for user in gone {
            self.report(user, Some(Edge::Offline));
        }
        // Deltas that arrived meanwhile, in order from the snapshot on.
        let mut buffered = buffered;
        buffered.sort_by_key(|d| d.seq);
        let mut applied = seq;
        let mut gap = false;
        for delta in buffered.iter().filter(|d| d.seq > seq) {
            if delta.seq != applied + 1 {
                gap = true;
                break;
            }
            self.apply(slot, delta);
            applied = delta.seq;
        }
        if let Some(peer) = self.peers.get_mut(node.as_str()) {
            peer.applied = applied;
        }
        self.ack(&node, chunk.epoch, applied).await;
        if gap {
            self.ask_snapshot(&node, now).await;
        }
        self.publish_synced();
    }

    fn on_control(&self, c: Control) {
        if c.origin == *self.cluster.node {
            return;
        }
        match c.action {
            Some(control::Action::Close(close)) => {
                let code = ErrorCode::try_from(close.code).unwrap_or(ErrorCode::LoggedOut);
                let local = &self.cluster.local;
                if !close.device.is_empty() {
                    local.close_device(close.user, &close.device, code);
                } else if let Ok(credential) = <[u8; 32]>::try_from(&close.credential[..]) {
                    local.close_credential(close.user, &credential, code);
                } else {
                    local.close_user(close.user, code);
                }
            }
            Some(control::Action::Profile(p)) => {
                if let Some(presence) = self.cluster.presence.get() {
                    presence.profile_changed(p.user, p.members);
                }
            }
            None => self.malformed(),
        }
    }
}
