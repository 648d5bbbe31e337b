//! Storage configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How the store is laid out and how hard it works. Every field has a safe default.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding the shards and the metadata file.
    pub data_dir: PathBuf,
    /// Number of shards; fixed when the data directory is created.
    pub shards: usize,
    /// Appends that may wait in one shard's queue before senders are held back.
    pub queue_depth: usize,
    /// Most appends one group commit takes.
    pub max_batch: usize,
    /// sled page cache for all shards together, in bytes.
    pub cache_bytes: u64,
    /// Largest history page, in messages.
    pub max_page: usize,
    /// Conversations whose last seq each writer keeps in memory.
    pub seq_cache_entries: usize,
    /// Sends per shard whose ids are remembered to recognise a resend (16 bytes of
    /// memory each); a message resent after this many later sends on its shard is
    /// stored again.
    pub idempotency_window: usize,
    /// Password hashing cost.
    pub password: PasswordParams,
    /// How long a login token stays valid.
    pub token_ttl: Duration,
    /// A commit-log segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// How often sled flushes each shard's indexes on its own, in ms (`None`: only
    /// when told; crash tests use it to keep the indexes on disk behind the log).
    pub index_flush_every_ms: Option<u64>,
    /// How often every shard's indexes are flushed so that the commit log before
    /// that point can be deleted (`None`: only at shutdown; tests that simulate a
    /// crash use it).
    pub checkpoint_interval: Option<Duration>,
    /// How often a [`crate::ManagedStore`] whose indexes failed checks whether the
    /// disk takes writes again, and reopens once it does.
    pub reopen_check_interval: Duration,
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP's recommended minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    /// Cheap parameters for tests, where hundreds of accounts are made.
    pub fn insecure_fast() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

impl StoreConfig {
    /// Defaults for a store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            shards: 4,
            queue_depth: 4096,
            max_batch: 1024,
            cache_bytes: 64 * 1024 * 1024,
            max_page: 100,
            seq_cache_entries: 1 << 20,
            idempotency_window: 1 << 20,
            password: PasswordParams::default(),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            segment_bytes: crate::commitlog::DEFAULT_SEGMENT_BYTES,
            checkpoint_interval: Some(Duration::from_secs(1)),
            index_flush_every_ms: None,
            reopen_check_interval: Duration::from_secs(1),
        }
    }

    /// Defaults for tests: small caches, cheap password hashing.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_bytes: 16 * 1024 * 1024,
            password: PasswordParams::insecure_fast(),
            ..Self::new(data_dir)
        }
    }
}
