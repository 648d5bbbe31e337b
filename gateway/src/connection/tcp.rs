//! The TCP listener (plain, or TLS for networks that block UDP): accepts
//! connections, caps how many are open, and runs a session for each.

use std::sync::Arc;

use courier_protocol::pb::Frame;
use courier_protocol::{encode_frame, ErrorCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::accept::{refuse, Accepted, Acceptor};
use crate::connection::service::Connections;
use crate::connection::session;
use crate::metrics::Transport;

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let acceptor = Acceptor::new(
        listener,
        conns.budget.clone(),
        conns.config.write_timeout(),
        "tcp",
    );
    while let Some(Accepted {
        stream,
        peer,
        permit,
    }) = acceptor.next(&shutdown).await
    {
        let Some(slot) = permit else {
            // A TLS client could not read a plain frame: it is just closed.
            if tls.is_none() {
                let frame = Frame::kick(ErrorCode::Overloaded, "too many connections");
                refuse(&stream, &encode_frame(&frame));
            }
            continue;
        };
        let conns = conns.clone();
        let shutdown = shutdown.clone();
        let session_tasks = tasks.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    session::run(
                        reader,
                        writer,
                        conns,
                        shutdown,
                        session_tasks,
                        Transport::Tcp,
                    )
                    .await;
                }
                // Boxed: the TLS state would otherwise widen every plain session's task.
                Some(acceptor) => {
                    Box::pin(async move {
                        let handshake = conns.config.handshake_timeout();
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => {
                                let (reader, writer) = tokio::io::split(tls_stream);
                                session::run(
                                    reader,
                                    writer,
                                    conns,
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
