//! What bounds the number of connections one process holds: the descriptor limit,
//! raised at start to what the host allows, and one connection budget shared by every
//! listener (TCP, TLS, QUIC, HTTP). A connection past the budget is answered
//! `OVERLOADED` at once and closed, never left hanging in the accept queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept back from the connection budget for the store's files, media
/// temp files, the QUIC socket, listeners and outgoing HTTP (webhooks, S3).
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in
/// force afterwards (`None` where the platform has no such limit).
pub fn raise_descriptor_limit() -> Option<u64> {
    imp::raise()
}

#[cfg(target_os = "linux")]
mod imp {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    pub fn raise() -> Option<u64> {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => return Some(hard),
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit")
                }
            }
        }
        Some(soft)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn raise() -> Option<u64> {
        None
    }
}

/// Connections one process may hold: `max_total` of any kind, of which at most
/// `max_descriptors` may use a file descriptor (TCP, TLS, HTTP; QUIC connections
/// share one UDP socket). Cheap to clone.
#[derive(Clone)]
pub struct ConnectionBudget {
    inner: Arc<Budget>,
}

struct Budget {
    total: Arc<Semaphore>,
    descriptors: Arc<Semaphore>,
    max_total: usize,
    max_descriptors: usize,
    refused: AtomicU64,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    _descriptor: Option<OwnedSemaphorePermit>,
}

impl ConnectionBudget {
    /// A budget of `max_total` connections, `max_descriptors` of them on descriptors.
    pub fn new(max_total: usize, max_descriptors: usize) -> Self {
        let max_descriptors = max_descriptors.min(max_total);
        Self {
            inner: Arc::new(Budget {
                total: Arc::new(Semaphore::new(max_total)),
                descriptors: Arc::new(Semaphore::new(max_descriptors)),
                max_total,
                max_descriptors,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The budget for this process: `max_connections` in all, and as many descriptor
    /// connections as the (raised) descriptor limit leaves after the reserve.
    pub fn for_process(max_connections: usize) -> Self {
        let descriptors = match raise_descriptor_limit() {
            Some(limit) => {
                let usable = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
                usize::try_from(usable).unwrap_or(usize::MAX)
            }
            None => max_connections,
        };
        let budget = Self::new(max_connections, descriptors);
        tracing::info!(
            max_connections,
            descriptor_connections = budget.max_descriptors(),
            "connection budget"
        );
        budget
    }

    /// Admits a connection that holds a descriptor, or `None` past the budget.
    pub fn admit_socket(&self) -> Option<ConnectionPermit> {
        let descriptor = self.inner.descriptors.clone().try_acquire_owned().ok();
        let Some(descriptor) = descriptor else {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let total = self.admit_total()?;
        Some(ConnectionPermit {
            _total: total,
            _descriptor: Some(descriptor),
        })
    }

    /// Admits a connection without a descriptor of its own (QUIC).
    pub fn admit_datagram(&self) -> Option<ConnectionPermit> {
        Some(ConnectionPermit {
            _total: self.admit_total()?,
            _descriptor: None,
        })
    }

    fn admit_total(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.inner.total.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Connections open now (all kinds).
    pub fn open(&self) -> usize {
        self.inner.max_total - self.inner.total.available_permits()
    }

    /// Connections refused for want of budget so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Most connections of any kind.
    pub fn max_total(&self) -> usize {
        self.inner.max_total
    }

    /// Most descriptor-backed connections.
    pub fn max_descriptors(&self) -> usize {
        self.inner.max_descriptors
    }
}

/// Logs a repeating failure (an accept error, say) at most once per interval, with
/// how many occurrences were folded into the line.
pub struct ThrottledLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl ThrottledLog {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; returns how many happened since the last line when a
    /// line is due now (the caller logs it), `None` otherwise.
    pub fn due(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        let now = Instant::now();
        if s.0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        s.0 = Some(now);
        Some(std::mem::take(&mut s.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_and_total_budgets_are_both_held() {
        let budget = ConnectionBudget::new(3, 2);
        let a = budget.admit_socket().unwrap();
        let _b = budget.admit_socket().unwrap();
        assert!(budget.admit_socket().is_none(), "descriptor budget spent");
        let _q = budget.admit_datagram().unwrap();
        assert!(budget.admit_datagram().is_none(), "total budget spent");
        assert_eq!(budget.open(), 3);
        assert_eq!(budget.refused(), 2);
        drop(a);
        assert!(budget.admit_socket().is_some());
    }

    #[test]
    fn a_throttled_log_folds_repeats() {
        let log = ThrottledLog::new(Duration::from_secs(3600));
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        let log = ThrottledLog::new(Duration::ZERO);
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), Some(1));
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let Some(soft) = raise_descriptor_limit() else {
            return;
        };
        #[cfg(target_os = "linux")]
        {
            let (now, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
            assert_eq!(soft, now);
            assert_eq!(now, hard);
        }
    }
}
