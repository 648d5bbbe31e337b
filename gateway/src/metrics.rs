//! Operator metrics in the Prometheus text format (`GET /metrics`): connections by
//! transport, handshakes, frames, messages, fan-out deliveries, slow consumers,
//! storage queue depth, group-commit batch sizes and flush latency, presence and
//! receipt suppression. Counters are plain atomics updated on the hot path; the text
//! is rendered only when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::api::Api;

/// A transport a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// A QUIC stream.
    Quic,
    /// WebSocket on the HTTP listener.
    WebSocket,
}

impl Transport {
    fn index(self) -> usize {
        self as usize
    }

    const ALL: [(Transport, &'static str); 4] = [
        (Transport::Tcp, "tcp"),
        (Transport::Tls, "tls"),
        (Transport::Quic, "quic"),
        (Transport::WebSocket, "websocket"),
    ];
}

/// Connection-layer counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open sessions per transport.
    pub sessions: [AtomicI64; 4],
    /// Completed handshakes per transport.
    pub handshakes: [AtomicU64; 4],
    /// Refused handshakes (bad token, version, ...).
    pub handshake_failures: AtomicU64,
    /// Frames read from clients.
    pub frames_in: AtomicU64,
    /// Frames written to clients.
    pub frames_out: AtomicU64,
    /// Write syscalls (batches) to clients.
    pub writes: AtomicU64,
    /// Sessions closed because the client did not keep up (full queue or a write
    /// past its deadline).
    pub slow_closes: AtomicU64,
    /// Of those, sessions whose write missed its deadline (the peer stopped reading).
    pub stalled_writes: AtomicU64,
}

impl Metrics {
    /// A session on `t` opened (+1) or closed (-1).
    pub fn session(&self, t: Transport, delta: i64) {
        self.sessions[t.index()].fetch_add(delta, Ordering::Relaxed);
    }

    /// A handshake on `t` succeeded.
    pub fn handshake(&self, t: Transport) {
        self.handshakes[t.index()].fetch_add(1, Ordering::Relaxed);
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn histogram(out: &mut String, name: &str, help: &str, h: &courier_storage::Histogram, scale: f64) {
    let (buckets, sum, count) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, cumulative) in buckets {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            bound as f64 * scale
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}",
        sum as f64 * scale
    );
}

/// Renders every metric.
pub fn render(api: &Api) -> String {
    let m = &api.metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP courier_sessions Open sessions by transport.\n# TYPE courier_sessions gauge"
    );
    for (t, label) in Transport::ALL {
        let _ = writeln!(
            out,
            "courier_sessions{{transport=\"{label}\"}} {}",
            m.sessions[t.index()].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP courier_handshakes_total Completed handshakes by transport.\n# TYPE courier_handshakes_total counter");
    for (t, label) in Transport::ALL {
        let _ = writeln!(
            out,
            "courier_handshakes_total{{transport=\"{label}\"}} {}",
            load(&m.handshakes[t.index()])
        );
    }
    counter(
        &mut out,
        "courier_handshake_failures_total",
        "Refused handshakes.",
        load(&m.handshake_failures),
    );
    gauge(
        &mut out,
        "courier_online_devices",
        "Devices online.",
        api.registry.online_devices() as i64,
    );
    counter(
        &mut out,
        "courier_frames_in_total",
        "Frames read from clients.",
        load(&m.frames_in),
    );
    counter(
        &mut out,
        "courier_frames_out_total",
        "Frames written to clients.",
        load(&m.frames_out),
    );
    counter(
        &mut out,
        "courier_writes_total",
        "Write calls to clients (frames are coalesced).",
        load(&m.writes),
    );
    counter(
        &mut out,
        "courier_deliveries_total",
        "Deliver frames queued to devices (fan-out).",
        api.registry.deliveries(),
    );
    counter(
        &mut out,
        "courier_slow_consumer_closes_total",
        "Sessions closed because their outbound queue was full.",
        api.registry.slow_consumers(),
    );
    counter(
        &mut out,
        "courier_slow_sessions_closed_total",
        "Sessions closed as slow consumers (queue full, or a write past write_timeout_ms).",
        load(&m.slow_closes),
    );
    counter(
        &mut out,
        "courier_stalled_writes_total",
        "Sessions whose write missed its deadline (the peer stopped reading).",
        load(&m.stalled_writes),
    );
    gauge(
        &mut out,
        "courier_connections_open",
        "Connections holding a place in the process-wide budget (all listeners).",
        api.connections.open() as i64,
    );
    gauge(
        &mut out,
        "courier_connections_max",
        "The process-wide connection budget.",
        api.connections.max_total() as i64,
    );
    gauge(
        &mut out,
        "courier_connections_max_descriptors",
        "Connections that may hold a file descriptor (TCP, TLS, HTTP), after the descriptor limit.",
        api.connections.max_descriptors() as i64,
    );
    counter(
        &mut out,
        "courier_connections_refused_total",
        "Connections refused past the budget (answered OVERLOADED).",
        api.connections.refused(),
    );
    let _ = writeln!(out, "# HELP courier_rate_limited_total Requests refused by a rate limit, by limit.\n# TYPE courier_rate_limited_total counter");
    for (limit, n) in api.limits.refused() {
        let _ = writeln!(
            out,
            "courier_rate_limited_total{{limit=\"{}\"}} {n}",
            limit.name()
        );
    }
    gauge(
        &mut out,
        "courier_rate_limit_keys",
        "Users and addresses the rate limits hold state for.",
        api.limits.keys() as i64,
    );
    counter(
        &mut out,
        "courier_password_hashes_shed_total",
        "Logins and registrations answered OVERLOADED because password hashing was saturated.",
        api.passwords.shed_count(),
    );
    let stats = api.storage_stats();
    counter(
        &mut out,
        "courier_messages_stored_total",
        "Messages stored (durable).",
        load(&stats.appended),
    );
    counter(
        &mut out,
        "courier_messages_deduplicated_total",
        "Resends answered with the original seq.",
        load(&stats.deduplicated),
    );
    counter(
        &mut out,
        "courier_commit_failures_total",
        "Failed group commits.",
        load(&stats.failed_commits),
    );
    gauge(
        &mut out,
        "courier_storage_unwritable_shards",
        "Shards whose last group commit failed (disk full or failing); 0 when all write.",
        load(&stats.unwritable_shards) as i64,
    );
    gauge(
        &mut out,
        "courier_storage_indexes_failed",
        "1 while the indexes have failed a write and the store waits to reopen (writes refused, reads served).",
        i64::from(stats.indexes_failed.load(std::sync::atomic::Ordering::Relaxed)),
    );
    counter(
        &mut out,
        "courier_storage_index_failures_total",
        "Times the indexes failed a write (disk full or failing).",
        load(&stats.index_failures),
    );
    counter(
        &mut out,
        "courier_storage_reopens_total",
        "Times the store reopened by itself after its indexes failed.",
        load(&stats.reopens),
    );
    counter(
        &mut out,
        "courier_commitlog_replayed_records_total",
        "Commit-log records applied again at start (the indexes lacked them).",
        load(&stats.replayed),
    );
    counter(
        &mut out,
        "courier_checkpoints_total",
        "Checkpoints: every shard's indexes flushed, the commit logs cut.",
        load(&stats.checkpoints),
    );
    gauge(
        &mut out,
        "courier_storage_queue_depth",
        "Appends waiting for a writer.",
        api.storage_queued() as i64,
    );
    histogram(
        &mut out,
        "courier_commit_batch_size",
        "Appends per group commit.",
        &stats.batch_size,
        1.0,
    );
    histogram(
        &mut out,
        "courier_commit_flush_seconds",
        "Time to make a group commit durable (commit-log write + fdatasync) and apply it.",
        &stats.flush_us,
        1e-6,
    );
    let p = api.presence.counters.snapshot();
    counter(
        &mut out,
        "courier_presence_events_total",
        "Presence edges reported.",
        p.events_in,
    );
    counter(
        &mut out,
        "courier_presence_frames_total",
        "PresenceBatch frames queued.",
        p.frames_out,
    );
    let _ = writeln!(out, "# HELP courier_presence_suppressed_total Presence work avoided, by mechanism.\n# TYPE courier_presence_suppressed_total counter");
    for (why, n) in [
        ("debounced", p.suppressed_debounced),
        ("offline", p.suppressed_offline),
        ("pull_only", p.suppressed_pull_only),
        ("coalesced", p.suppressed_coalesced),
        ("dropped", p.events_dropped),
    ] {
        let _ = writeln!(
            out,
            "courier_presence_suppressed_total{{reason=\"{why}\"}} {n}"
        );
    }
    if let Some(cluster) = &api.cluster {
        render_cluster(&mut out, &cluster.counters);
    }
    if let Some(events) = &api.events {
        render_events(&mut out, events);
    }
    if let Some(push) = &api.push {
        render_push(&mut out, push);
    }
    counter(
        &mut out,
        "courier_typing_notices_total",
        "Typing notices sent (each to every recipient's online devices).",
        api.typing.notices.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "courier_reaction_changes_total",
        "Reaction changes asked for (added or taken back).",
        api.reactions.changes.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "courier_reaction_events_total",
        "ReactionsChanged events stored (one per change, or per window in big groups).",
        api.reactions.events.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "courier_typing_throttled_total",
        "Typing frames dropped by the per-sender throttle.",
        api.typing.throttled.load(Ordering::Relaxed),
    );
    let r = api.receipts.counters.snapshot();
    counter(
        &mut out,
        "courier_receipt_reports_total",
        "Read reports.",
        r.reports_in,
    );
    counter(
        &mut out,
        "courier_receipt_frames_total",
        "ReadReceipt frames queued.",
        r.frames_out,
    );
    let _ = writeln!(out, "# HELP courier_receipts_suppressed_total Receipt work avoided, by mechanism.\n# TYPE courier_receipts_suppressed_total counter");
    for (why, n) in [
        ("coalesced", r.suppressed_coalesced),
        ("large_group", r.suppressed_large_group),
        ("dropped", r.reports_dropped),
    ] {
        let _ = writeln!(
            out,
            "courier_receipts_suppressed_total{{reason=\"{why}\"}} {n}"
        );
    }
    out
}

fn render_events(out: &mut String, e: &crate::api::events::EventOutbox) {
    let c = &e.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "courier_webhook_events_queued_total",
            "Webhook events appended to the durable outbox.",
            &c.queued,
        ),
        (
            "courier_webhook_events_delivered_total",
            "Webhook events the receiver acknowledged.",
            &c.delivered,
        ),
        (
            "courier_webhook_event_batches_total",
            "Webhook event deliveries (batches) acknowledged.",
            &c.batches,
        ),
        (
            "courier_webhook_event_failures_total",
            "Webhook event deliveries that failed (each is retried).",
            &c.failures,
        ),
    ] {
        counter(out, name, help, get(value));
    }
    gauge(
        out,
        "courier_webhook_events_backlog_bytes",
        "Webhook events not yet acknowledged, in bytes.",
        e.backlog_bytes() as i64,
    );
}

fn render_push(out: &mut String, p: &crate::api::push::Push) {
    let c = &p.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, help, value) in [
        (
            "courier_push_queued_total",
            "Stored messages queued for push decisions.",
            &c.queued,
        ),
        (
            "courier_push_sent_total",
            "Pushes APNs or FCM accepted.",
            &c.sent,
        ),
        (
            "courier_push_withdrawn_total",
            "Withdrawals (read elsewhere) APNs or FCM accepted.",
            &c.withdrawn,
        ),
        (
            "courier_push_suppressed_total",
            "Device pushes not sent: acknowledged, read, muted, blocked or logged out.",
            &c.suppressed,
        ),
        (
            "courier_push_tokens_removed_total",
            "Push tokens removed because the service reported them unregistered.",
            &c.tokens_removed,
        ),
        (
            "courier_push_failures_total",
            "Pushes given up (refused, or failing after retries).",
            &c.failures,
        ),
        (
            "courier_push_retries_total",
            "Push attempts retried.",
            &c.retries,
        ),
    ] {
        counter(out, name, help, get(value));
    }
    gauge(
        out,
        "courier_push_backlog_bytes",
        "Push queue not yet decided, in bytes.",
        p.backlog_bytes() as i64,
    );
}

fn render_cluster(out: &mut String, c: &crate::cluster::ClusterCounters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    gauge(
        out,
        "courier_cluster_nodes",
        "Other nodes alive now.",
        get(&c.nodes) as i64,
    );
    for (name, help, value) in [
        (
            "courier_cluster_deliveries_out_total",
            "Delivery publications sent to other nodes.",
            &c.deliveries_out,
        ),
        (
            "courier_cluster_deliveries_in_total",
            "Delivery publications received from other nodes.",
            &c.deliveries_in,
        ),
        (
            "courier_cluster_publish_dropped_total",
            "Publications dropped on a full queue to NATS.",
            &c.publish_dropped,
        ),
        (
            "courier_cluster_deltas_out_total",
            "Directory deltas broadcast.",
            &c.deltas_out,
        ),
        (
            "courier_cluster_deltas_in_total",
            "Directory deltas applied from other nodes.",
            &c.deltas_in,
        ),
        (
            "courier_cluster_ack_timeouts_total",
            "Directory deltas not acknowledged by every node in time.",
            &c.ack_timeouts,
        ),
        (
            "courier_cluster_snapshots_requested_total",
            "Directory snapshots asked of other nodes.",
            &c.snapshots_requested,
        ),
        (
            "courier_cluster_snapshots_served_total",
            "Directory snapshots served to other nodes.",
            &c.snapshots_served,
        ),
        (
            "courier_cluster_nodes_expired_total",
            "Nodes dropped when their lease ran out.",
            &c.nodes_expired,
        ),
        (
            "courier_cluster_sends_forwarded_total",
            "Sends forwarded to the node that owns their conversation.",
            &c.forwarded,
        ),
        (
            "courier_cluster_forward_timeouts_total",
            "Forwarded sends and group changes whose owner did not answer in time.",
            &c.forward_timeouts,
        ),
        (
            "courier_cluster_group_changes_forwarded_total",
            "Group changes forwarded to the node that owns the group.",
            &c.group_changes_forwarded,
        ),
        (
            "courier_cluster_group_changes_served_total",
            "Group changes made for other nodes.",
            &c.group_changes_served,
        ),
        (
            "courier_cluster_reactions_forwarded_total",
            "Reactions forwarded to the node that owns their conversation.",
            &c.reactions_forwarded,
        ),
        (
            "courier_cluster_reactions_served_total",
            "Reactions stored for other nodes.",
            &c.reactions_served,
        ),
        (
            "courier_cluster_malformed_total",
            "Messages from other nodes that did not decode.",
            &c.malformed,
        ),
    ] {
        counter(out, name, help, get(value));
    }
}
