//! Past one node: several gateways serve one deployment, over one PostgreSQL
//! database, and reach each other's devices through NATS.
//!
//! - Each node has an inbox subject (`<p>.d.<node>`). A committed batch becomes one
//!   publication per node that has any recipient online, carrying each frame encoded
//!   once and its recipients there; devices on this node are pushed directly.
//! - The [`directory`] (users by node) lives in every node's memory. A node owns its
//!   own entries and broadcasts changes to them as numbered deltas, which every
//!   other node applies and acknowledges; a device coming online gets its Welcome
//!   only once every live node has acknowledged (or `ack_timeout_ms` passed), so a
//!   message committed after the client's sync is routed to it. A node that misses a
//!   delta (a gap in the numbers, or a heartbeat ahead of it) asks the owner for a
//!   snapshot. Heartbeats renew each node's lease; a node not heard from for
//!   `lease_ms` is dropped with its devices.
//! - Presence edges are computed on the directory (first device online anywhere,
//!   last device offline everywhere); every node feeds them to its own presence
//!   actor, which tells that node's devices, with the same debounce, coalescing and
//!   friend rules as one node.
//! - Each conversation has an owner node ([`forward`]): sends arriving elsewhere are
//!   forwarded to it, so one node stores and fans out all of a conversation's
//!   messages and they reach every device in seq order.
//! - Reactions are stored by the conversation's owner too ([`reactions`]): their
//!   events take seqs in the conversation's log and leave in order with its
//!   messages, gathered in big groups across every node's users.
//! - Group changes are made by the group's owner too ([`group_changes`]), so its
//!   member list changes in log order with the messages it routes; member-list
//!   changes travel with the batch that made them, to every node; session ends (logout, a removed device) are broadcast to every node.
//!
//! Why NATS core and memory, not Redis or a JetStream key-value bucket: the directory
//! is soft state that the nodes themselves can rebuild at any time, so it needs no
//! store of its own; a lookup on the fan-out path is a hash probe, not a round trip;
//! one engine (NATS) serves both the directory and delivery, so there is one thing
//! less to run and to fail. Debian's nats-server (2.9) has no per-key TTLs in its
//! key-value buckets, which a lease per entry would need.

mod bus;
pub mod delivery;
pub mod directory;
mod forward;
mod group_changes;
mod reactions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::members::MemberCache;
use crate::api::presence::Presence;
use crate::config::ClusterConfig;
use crate::connection::registry::Registry;
use crate::connection::service::BoxFuture;
use directory::{Directory, Edge, SELF};

/// Why the cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server could be reached.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The configured URLs.
        urls: String,
        /// What went wrong.
        reason: String,
    },
    /// A subscription was refused.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What went wrong.
        reason: String,
    },
}

/// What the cluster machinery did so far (`/metrics`).
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Delivery publications sent to other nodes.
    pub deliveries_out: AtomicU64,
    /// Delivery publications received from other nodes.
    pub deliveries_in: AtomicU64,
    /// Publications dropped because the queue to NATS was full.
    pub publish_dropped: AtomicU64,
    /// Directory deltas this node broadcast.
    pub deltas_out: AtomicU64,
    /// Directory deltas applied from other nodes.
    pub deltas_in: AtomicU64,
    /// Deltas whose acknowledgements did not all come within `ack_timeout_ms`.
    pub ack_timeouts: AtomicU64,
    /// Snapshots asked of other nodes.
    pub snapshots_requested: AtomicU64,
    /// Snapshots served to other nodes.
    pub snapshots_served: AtomicU64,
    /// Messages from other nodes that did not decode.
    pub malformed: AtomicU64,
    /// Other nodes alive now.
    pub nodes: AtomicU64,
    /// Nodes dropped because their lease ran out.
    pub nodes_expired: AtomicU64,
    /// Sends forwarded to the node that owns their conversation.
    pub forwarded: AtomicU64,
    /// Forwarded sends and group changes whose owner did not answer in time.
    pub forward_timeouts: AtomicU64,
    /// Group changes forwarded to the node that owns the group.
    pub group_changes_forwarded: AtomicU64,
    /// Group changes made for other nodes.
    pub group_changes_served: AtomicU64,
    /// Reactions forwarded to the node that owns their conversation.
    pub reactions_forwarded: AtomicU64,
    /// Reactions stored for other nodes.
    pub reactions_served: AtomicU64,
}

/// What other nodes send this one to do, subscribed from the start and served once
/// the store is open.
struct Served {
    appends: async_nats::Subscriber,
    answers: async_nats::Subscriber,
    group_changes: async_nats::Subscriber,
    reactions: async_nats::Subscriber,
}

/// Local directory changes not broadcast yet, and who waits for them to be known.
#[derive(Default)]
struct Announce {
    changes: HashMap<u64, bool>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// The subjects one deployment's nodes use.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Frames for `node`'s devices.
    fn deliveries(&self, node: &str) -> String {
        format!("{}.d.{node}", self.prefix)
    }
    /// Every broadcast (deltas, heartbeats, control), one wildcard.
    fn broadcasts(&self) -> String {
        format!("{}.c.>", self.prefix)
    }
    fn deltas(&self) -> String {
        format!("{}.c.dir", self.prefix)
    }
    fn heartbeats(&self) -> String {
        format!("{}.c.hb", self.prefix)
    }
    fn control(&self) -> String {
        format!("{}.c.ctl", self.prefix)
    }
    /// What is addressed to `node` alone (acks, snapshot requests and replies).
    fn direct(&self, node: &str) -> String {
        format!("{}.n.{node}.>", self.prefix)
    }
    fn ack(&self, node: &str) -> String {
        format!("{}.n.{node}.ack", self.prefix)
    }
    fn snapshot_request(&self, node: &str) -> String {
        format!("{}.n.{node}.snap", self.prefix)
    }
    fn snapshot_reply(&self, node: &str) -> String {
        format!("{}.n.{node}.snapr", self.prefix)
    }
    /// Sends forwarded to `node`, which owns their conversations.
    fn append(&self, node: &str) -> String {
        format!("{}.a.{node}", self.prefix)
    }
    /// Where `node` hears the answer to its forwarded send `id`.
    fn append_reply(&self, node: &str, id: u64) -> String {
        format!("{}.r.{node}.{id}", self.prefix)
    }
    fn append_replies(&self, node: &str) -> String {
        format!("{}.r.{node}.>", self.prefix)
    }
    /// Group changes forwarded to `node`, which owns those groups.
    fn group_change(&self, node: &str) -> String {
        format!("{}.g.{node}", self.prefix)
    }
    /// Reactions forwarded to `node`, which owns their conversations.
    fn reaction(&self, node: &str) -> String {
        format!("{}.x.{node}", self.prefix)
    }
}

/// This node's membership in the deployment.
pub struct Cluster {
    node: Arc<str>,
    config: ClusterConfig,
    subjects: Subjects,
    client: async_nats::Client,
    /// Users by node.
    pub directory: Directory,
    local: Arc<Registry>,
    members: Arc<MemberCache>,
    presence: OnceLock<Presence>,
    announce: Mutex<Announce>,
    wake: Notify,
    outbox: mpsc::Sender<(String, Bytes)>,
    /// Counters for `/metrics`.
    pub counters: ClusterCounters,
    synced: watch::Sender<bool>,
    pending: forward::Pending,
    /// The store, for sends whose owner has gone (set once the store is open).
    store: OnceLock<Arc<dyn courier_storage::Storage>>,
    /// Forwarded sends, their answers and forwarded group changes, until
    /// `serve_appends` takes them.
    served: Mutex<Option<Served>>,
    /// Forwarded reactions, until the API serves them ([`Cluster::serve_reactions`]).
    reactions_in: Mutex<Option<async_nats::Subscriber>>,
}

impl Cluster {
    /// Connects to NATS, joins the deployment and learns who is online where (from
    /// every node heard within `join_window_ms`), before returning.
    pub async fn start(
        config: &ClusterConfig,
        local: Arc<Registry>,
        members: Arc<MemberCache>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<Self>, ClusterError> {
        let urls = config.urls();
        let options = async_nats::ConnectOptions::new()
            .name(format!("courier-{}", config.node_id))
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(65_536)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(%event, "NATS connection"),
                    _ => tracing::warn!(%event, "NATS connection"),
                }
            });
        let client = async_nats::connect_with_options(urls, options)
            .await
            .map_err(|e| ClusterError::Connect {
                urls: config.nats_urls.clone(),
                reason: e.to_string(),
            })?;
        let subjects = Subjects {
            prefix: config.subject_prefix.clone(),
        };
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| ClusterError::Subscribe {
                        subject,
                        reason: e.to_string(),
                    })
            }
        };
        let node: Arc<str> = Arc::from(config.node_id.as_str());
        let broadcasts = subscribe(subjects.broadcasts()).await?;
        let direct = subscribe(subjects.direct(&node)).await?;
        let inbox = subscribe(subjects.deliveries(&node)).await?;
        let served = Served {
            appends: subscribe(subjects.append(&node)).await?,
            answers: subscribe(subjects.append_replies(&node)).await?,
            group_changes: subscribe(subjects.group_change(&node)).await?,
            reactions: subscribe(subjects.reaction(&node)).await?,
        };
        let (outbox, queued) = mpsc::channel(config.publish_queue);
        let cluster = Arc::new(Self {
            directory: Directory::new(&node),
            node,
            config: config.clone(),
            subjects,
            client: client.clone(),
            local,
            members,
            presence: OnceLock::new(),
            announce: Mutex::default(),
            wake: Notify::new(),
            outbox,
            counters: ClusterCounters::default(),
            synced: watch::Sender::new(false),
            pending: forward::Pending::default(),
            store: OnceLock::new(),
            served: Mutex::new(Some(served)),
            reactions_in: Mutex::new(None),
        });
        tasks.spawn(bus::publish(client, queued, shutdown.clone()));
        tasks.spawn(bus::deliveries(cluster.clone(), inbox, shutdown.clone()));
        tasks.spawn(bus::ControlLoop::new(cluster.clone()).run(broadcasts, direct, shutdown));
        // Nodes answer a hello at once; then each is asked for its entries.
        tokio::time::sleep(Duration::from_millis(config.join_window_ms)).await;
        let mut synced = cluster.synced.subscribe();
        let learned = synced.wait_for(|s| *s);
        if tokio::time::timeout(Duration::from_millis(config.lease_ms), learned)
            .await
            .is_err()
        {
            tracing::warn!("some nodes sent no directory snapshot in time; starting anyway");
        }
        tracing::info!(node = %cluster.node, nodes = cluster.counters.nodes.load(Ordering::Relaxed) + 1, "joined the cluster");
        Ok(cluster)
    }

    /// Hands presence edges to `presence` from now on.
    pub fn attach_presence(&self, presence: Presence) {
        let _ = self.presence.set(presence);
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What `/v1/health` says of the cluster.
    pub fn health(&self) -> crate::api::dto::ClusterHealth {
        use async_nats::connection::State;
        crate::api::dto::ClusterHealth {
            node: self.node.to_string(),
            nats: match self.client.connection_state() {
                State::Connected => "connected",
                State::Disconnected => "disconnected",
                State::Pending => "pending",
            }
            .into(),
            nodes: self.counters.nodes.load(Ordering::Relaxed),
            users_online: self.directory.len(),
        }
    }

    /// Tells the other nodes that `user`'s profile changed (this node's presence
    /// actor is told by the caller).
    pub fn profile_changed(&self, user: u64, members: &[u64]) {
        use prost::Message as _;
        let control = courier_protocol::cluster::Control {
            origin: self.node.to_string(),
            action: Some(courier_protocol::cluster::control::Action::Profile(
                courier_protocol::cluster::ProfileChanged {
                    user,
                    members: members.to_vec(),
                },
            )),
        };
        self.publish(self.subjects.control(), control.encode_to_vec().into());
    }

    fn edge(&self, user: u64, edge: Option<Edge>) {
        let Some(presence) = self.presence.get() else {
            return;
        };
        match edge {
            Some(Edge::Online) => presence.online(user),
            Some(Edge::Offline) => presence.offline(user),
            None => {}
        }
    }

    /// `user`'s first device on this node came online: the other nodes are told; the
    /// future (if any) completes once they all know.
    pub fn local_online(&self, user: u64) -> Option<BoxFuture<'static, ()>> {
        let edge = self.directory.set(user, SELF, true);
        self.edge(user, edge);
        let (tx, rx) = match self.directory.has_peers() {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        {
            let mut announce = self.announce.lock().expect("cluster announce");
            announce.changes.insert(user, true);
            announce.waiters.extend(tx);
        }
        self.wake.notify_one();
        rx.map(|rx| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let _ = rx.await;
            })
        })
    }

    /// `user`'s last device on this node went offline.
    pub fn local_offline(&self, user: u64) {
        let edge = self.directory.set(user, SELF, false);
        self.edge(user, edge);
        self.announce
            .lock()
            .expect("cluster announce")
            .changes
            .insert(user, false);
        self.wake.notify_one();
    }

    /// Queues a publication; dropped and counted when the queue is full.
    fn publish(&self, subject: String, payload: Bytes) {
        if self.outbox.try_send((subject, payload)).is_err() {
            self.counters
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
