//! Accepting TCP connections for any listener: admission against the connection
//! budget, socket options, and accept errors logged once per interval.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::connection::limits::{ConnectionBudget, ConnectionPermit, ThrottledLog};

/// Accept errors (out of descriptors, say) are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// A listener that admits connections against the budget.
pub struct Acceptor {
    listener: TcpListener,
    budget: ConnectionBudget,
    user_timeout: Duration,
    errors: ThrottledLog,
    what: &'static str,
}

/// A connection off the listener.
pub struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// Who is on the other end.
    pub peer: SocketAddr,
    /// Its place in the budget; `None` when there is none left (answer it
    /// `OVERLOADED` and drop it).
    pub permit: Option<ConnectionPermit>,
}

impl Acceptor {
    /// Accepts on `listener` against `budget`; admitted sockets get no-delay and a
    /// `TCP_USER_TIMEOUT` of `user_timeout`. `what` names the listener in logs.
    pub fn new(
        listener: TcpListener,
        budget: ConnectionBudget,
        user_timeout: Duration,
        what: &'static str,
    ) -> Self {
        Self {
            listener,
            budget,
            user_timeout,
            errors: ThrottledLog::new(ACCEPT_ERROR_LOG_EVERY),
            what,
        }
    }

    /// The next connection, or `None` once `shutdown` fires.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<Accepted> {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.cancelled() => return None,
            };
            let (stream, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    if let Some(times) = self.errors.due() {
                        tracing::warn!(listener = self.what, error = %e, times, "accept failed");
                    }
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = self.budget.admit_socket();
            if permit.is_some() {
                let _ = stream.set_nodelay(true);
                set_user_timeout(&stream, self.user_timeout);
            }
            return Some(Accepted {
                stream,
                peer,
                permit,
            });
        }
    }
}

/// Answers a connection past the budget with `answer` without waiting on it: what the
/// peer sent already is discarded (so closing sends a FIN, not a reset that could
/// destroy the answer), and a fresh socket's send buffer has room for a small answer.
pub fn refuse(stream: &TcpStream, answer: &[u8]) {
    let mut buf = [0u8; 4096];
    for _ in 0..4 {
        match stream.try_read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(answer);
}

/// `TCP_USER_TIMEOUT`: the kernel drops the connection when data it sent stays
/// unacknowledged this long (a vanished peer, or one whose window stays shut).
#[cfg(target_os = "linux")]
fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    if let Err(e) = setsockopt(stream, sockopt::TcpUserTimeout, &ms) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// `TCP_USER_TIMEOUT` exists on Linux only.
#[cfg(not(target_os = "linux"))]
fn set_user_timeout(_stream: &TcpStream, _timeout: Duration) {}
