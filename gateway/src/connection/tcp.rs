//! The TCP listener (plain, or TLS for networks that block UDP): accepts
//! connections, caps how many are open, and runs a session for each.

use std::sync::Arc;
use std::time::Duration;

use courier_protocol::pb::Frame;
use courier_protocol::{encode_frame, ErrorCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::Api;
use crate::connection::session;
use crate::metrics::Transport;

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let slots = Arc::new(Semaphore::new(api.config.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tasks.spawn(async move {
                let mut stream = stream;
                let frame = Frame::kick(ErrorCode::Overloaded, "too many connections");
                let _ = stream.write_all(&encode_frame(&frame)).await;
            });
            continue;
        };
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
