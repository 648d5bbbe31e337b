//! The TCP listener (plain, or TLS for networks that block UDP): accepts
//! connections, caps how many are open, and runs a session for each.

use std::sync::Arc;
use std::time::Duration;

use courier_protocol::pb::Frame;
use courier_protocol::{encode_frame, ErrorCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::connection::limits::{ConnectionBudget, ThrottledLog};
use crate::connection::session;
use crate::metrics::Transport;

/// Accept errors (out of descriptors, say) are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    budget: ConnectionBudget,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let accept_errors = ThrottledLog::new(ACCEPT_ERROR_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                if let Some(times) = accept_errors.due() {
                    tracing::warn!(error = %e, times, "accept failed");
                }
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = budget.admit_socket() else {
            if tls.is_none() {
                refuse(&stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        set_user_timeout(&stream, api.config.write_timeout());
        let api = api.clone();
        let shutdown = shutdown.clone();
        let session_tasks = tasks.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    session::run(reader, writer, api, shutdown, session_tasks, Transport::Tcp)
                        .await;
                }
                // Boxed: the TLS state would otherwise widen every plain session's task.
                Some(acceptor) => {
                    Box::pin(async move {
                        let handshake = api.config.handshake_timeout();
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                let (reader, writer) = tokio::io::split(tls_stream);
                                session::run(
                                    reader,
                                    writer,
                                    api,
                                    shutdown,
                                    session_tasks,
                                    Transport::Tls,
                                )
                                .await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "tls handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                        }
                    })
                    .await
                }
            }
            tracing::trace!(%peer, "connection done");
            drop(slot);
        });
    }
}

/// Tells a connection past the budget `OVERLOADED` without waiting on it: a fresh
/// socket's send buffer is empty, so the one small frame goes out or is dropped.
fn refuse(stream: &TcpStream) {
    let frame = Frame::kick(ErrorCode::Overloaded, "too many connections");
    crate::connection::limits::discard_ready(stream);
    let _ = stream.try_write(&encode_frame(&frame));
}

/// `TCP_USER_TIMEOUT`: the kernel drops the connection when data it sent stays
/// unacknowledged this long (a vanished peer, or one whose window stays shut).
#[cfg(target_os = "linux")]
pub fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    if let Err(e) = setsockopt(stream, sockopt::TcpUserTimeout, &ms) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// `TCP_USER_TIMEOUT` exists on Linux only.
#[cfg(not(target_os = "linux"))]
pub fn set_user_timeout(_stream: &TcpStream, _timeout: Duration) {}
