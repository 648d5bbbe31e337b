//! Counters and histograms of the group commit, for the gateway's `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds of the flush-latency histogram, in microseconds.
pub const FLUSH_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];
/// Upper bounds of the batch-size histogram, in appends.
pub const BATCH_BUCKETS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000];

/// A histogram with fixed buckets (cumulative when read, as Prometheus wants).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// `(upper bound, cumulative count)` per bucket, then the sum and the count.
    pub fn snapshot(&self) -> (Vec<(u64, u64)>, u64, u64) {
        let mut running = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&b, c)| {
                running += c.load(Ordering::Relaxed);
                (b, running)
            })
            .collect();
        (
            buckets,
            self.sum.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// What the writers did so far (all shards together).
#[derive(Debug)]
pub struct CommitStats {
    /// Messages stored (resends excluded).
    pub appended: AtomicU64,
    /// Resends answered with the original seq.
    pub deduplicated: AtomicU64,
    /// Group commits that failed.
    pub failed_commits: AtomicU64,
    /// Appends per group commit.
    pub batch_size: Histogram,
    /// Time to make one group commit durable (commit-log write and `fdatasync`) and
    /// apply it to the indexes, in microseconds.
    pub flush_us: Histogram,
    /// Commit-log records applied again at open (the indexes lacked them).
    pub replayed: AtomicU64,
    /// Checkpoints taken (every shard's indexes flushed, the logs cut).
    pub checkpoints: AtomicU64,
    /// Shards whose last group commit failed (the disk is full or failing): appends
    /// to them are refused until a commit succeeds again.
    pub unwritable_shards: AtomicU64,
    /// The indexes failed a write (sled takes no writes after one): every write is
    /// refused until the store has reopened (its commit logs replayed into freshly
    /// opened indexes).
    pub indexes_failed: AtomicBool,
    /// Times the indexes failed a write.
    pub index_failures: AtomicU64,
    /// Times the store reopened itself after its indexes failed.
    pub reopens: AtomicU64,
}

impl CommitStats {
    /// Records that the indexes failed a write: once, with one log line, however
    /// many writes see it.
    pub(crate) fn note_indexes_failed(&self, e: &dyn std::fmt::Display) {
        if !self.indexes_failed.swap(true, Ordering::AcqRel) {
            self.index_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "the indexes failed a write: writes are refused until the store reopens");
        }
    }
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            appended: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            batch_size: Histogram::new(&BATCH_BUCKETS),
            flush_us: Histogram::new(&FLUSH_BUCKETS_US),
            replayed: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            unwritable_shards: AtomicU64::new(0),
            indexes_failed: AtomicBool::new(false),
            index_failures: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
        }
    }
}
