//! Read receipts to other people, with the same care for storms as presence.
//!
//! Read reports keep only the highest seq per (reader, conversation) and are
//! coalesced over `receipt_window_ms` by one actor:
//! - 1:1: the peer's devices get one `ReadReceipt` per reader per window;
//! - groups up to `receipt_push_max_group` members: one aggregated receipt per
//!   conversation per window to every online member (`reader` 0, `seq` the highest
//!   seq read in the window, `readers` how many members have read that far);
//! - larger groups: nothing is pushed; senders ask
//!   `GET /v1/conversations/{id}/messages/{seq}/reads`.
//!
//! (The reader's own other devices are told at once by the read handler, not here.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{encode_frame, ConversationId};
use courier_storage::Storage;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::api::members::MemberCache;
use crate::config::Config;
use crate::connection::service::Delivery;

/// What the receipt machinery did so far.
#[derive(Debug, Default)]
pub struct ReceiptCounters {
    /// Read reports that moved a cursor.
    pub reports_in: AtomicU64,
    /// Reports dropped on a full queue.
    pub reports_dropped: AtomicU64,
    /// Reports merged into another within a window.
    pub suppressed_coalesced: AtomicU64,
    /// Reports in groups too large for pushed receipts.
    pub suppressed_large_group: AtomicU64,
    /// ReadReceipt frames queued to devices.
    pub frames_out: AtomicU64,
}

/// A snapshot of [`ReceiptCounters`].
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct ReceiptStats {
    /// Read reports that moved a cursor.
    pub reports_in: u64,
    /// Reports dropped on a full queue.
    pub reports_dropped: u64,
    /// Reports merged into another within a window.
    pub suppressed_coalesced: u64,
    /// Reports in groups too large for pushed receipts.
    pub suppressed_large_group: u64,
    /// Frames queued to devices.
    pub frames_out: u64,
}

impl ReceiptCounters {
    /// The current values.
    pub fn snapshot(&self) -> ReceiptStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReceiptStats {
            reports_in: get(&self.reports_in),
            reports_dropped: get(&self.reports_dropped),
            suppressed_coalesced: get(&self.suppressed_coalesced),
            suppressed_large_group: get(&self.suppressed_large_group),
            frames_out: get(&self.frames_out),
        }
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Handle to the receipt actor.
pub struct Receipts {
    tx: mpsc::Sender<(u64, ConversationId, u64)>,
    /// What it did so far.
    pub counters: Arc<ReceiptCounters>,
}

impl Receipts {
    /// Starts the actor; it stops when `shutdown` fires.
    pub fn start(
        config: &Config,
        registry: Arc<dyn Delivery>,
        members: Arc<MemberCache>,
        store: Arc<dyn Storage>,
        shutdown: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(config.presence_queue.max(1));
        let counters = Arc::new(ReceiptCounters::default());
        let actor = Actor {
            rx,
            registry,
            members,
            store,
            counters: counters.clone(),
            window: Duration::from_millis(config.receipt_window_ms.max(1)),
            max_group: config.receipt_push_max_group,
            direct: HashMap::new(),
            groups: HashMap::new(),
        };
        (Self { tx, counters }, actor.run(shutdown))
    }

    /// `reader` moved its cursor in `c` to `seq`.
    pub fn read(&self, reader: u64, c: ConversationId, seq: u64) {
        add(&self.counters.reports_in, 1);
        if self.tx.try_send((reader, c, seq)).is_err() {
            add(&self.counters.reports_dropped, 1);
        }
    }
}

struct Actor {
    rx: mpsc::Receiver<(u64, ConversationId, u64)>,
    registry: Arc<dyn Delivery>,
    members: Arc<MemberCache>,
    store: Arc<dyn Storage>,
    counters: Arc<ReceiptCounters>,
    window: Duration,
    max_group: usize,
    /// (reader, conversation) -> highest seq this window.
    direct: HashMap<(u64, ConversationId), u64>,
    /// group -> highest seq read this window.
    groups: HashMap<u64, u64>,
}

impl Actor {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = interval(self.window);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((reader, c, seq)) = self.rx.recv() => self.report(reader, c, seq),
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    fn report(&mut self, reader: u64, c: ConversationId, seq: u64) {
        let slot = match c {
            ConversationId::Direct { .. } => self.direct.entry((reader, c)).or_default(),
            ConversationId::Group(g) => self.groups.entry(g).or_default(),
        };
        if *slot != 0 {
            add(&self.counters.suppressed_coalesced, 1);
        }
        *slot = (*slot).max(seq);
    }

    async fn flush(&mut self) {
        for ((reader, c), seq) in std::mem::take(&mut self.direct) {
            let Some(peer) = c.peer_of(reader) else {
                continue;
            };
            // A block stands in the way of receipts too, either way.
            let blocked = self
                .store
                .relation(reader, peer)
                .await
                .map_or(true, |r| r.blocking || r.blocked_by);
            if blocked {
                continue;
            }
            let frame = receipt(&c, reader, seq, 1);
            let queued = self
                .registry
                .push_to_user(peer, &encode_frame(&frame), None);
            add(&self.counters.frames_out, queued as u64);
        }
        for (group, seq) in std::mem::take(&mut self.groups) {
            let members = match self.members.members(group).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(group, error = %e, "cannot load members for receipts");
                    continue;
                }
            };
            if members.len() > self.max_group {
                add(&self.counters.suppressed_large_group, 1);
                continue;
            }
            let c = ConversationId::Group(group);
            // The author has "read" its own message; it is not a reader.
            let author = self
                .store
                .message(&c, seq)
                .await
                .ok()
                .flatten()
                .map(|m| m.sender);
            let others: Vec<u64> = members
                .iter()
                .copied()
                .filter(|&m| Some(m) != author)
                .collect();
            let readers = readers_at(self.store.as_ref(), &c, &others, seq)
                .await
                .len();
            let wire = encode_frame(&receipt(&c, 0, seq, readers as u32));
            for &m in members.iter() {
                let queued = self.registry.push_to_user(m, &wire, None);
                add(&self.counters.frames_out, queued as u64);
            }
        }
    }
}

fn receipt(c: &ConversationId, reader: u64, seq: u64, readers: u32) -> Frame {
    Frame::new(
        0,
        Kind::ReadReceipt(pb::ReadReceipt {
            conversation: c.to_string(),
            reader,
            seq,
            readers,
        }),
    )
}

/// The members of `c` whose read cursor is at or past `seq`.
pub async fn readers_at(
    store: &dyn Storage,
    c: &ConversationId,
    members: &[u64],
    seq: u64,
) -> Vec<u64> {
    let mut readers = Vec::new();
    for &m in members {
        let state = store.conversation_state(m, c).await;
        if state.ok().flatten().is_some_and(|s| s.read_seq >= seq) {
            readers.push(m);
        }
    }
    readers
}
