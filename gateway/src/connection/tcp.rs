//! The TCP listener (plain, or TLS for networks that block UDP): accepts
//! connections, caps how many are open, and runs a session for each. On the TLS
//! listener a client that chooses `http/1.1` by ALPN (a browser: `https://`,
//! `wss://`) is served the HTTP API and WebSocket sessions instead; one that
//! chooses `courier/1`, or nothing, speaks frames.

use std::sync::Arc;

use courier_protocol::pb::Frame;
use courier_protocol::{encode_frame, ErrorCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::accept::{refuse, Accepted, Acceptor};
use crate::connection::http::{self, HttpLimits};
use crate::connection::service::Connections;
use crate::connection::session;
use crate::connection::websocket::WsEndpoint;
use crate::metrics::Transport;

/// What the TLS listener serves to clients that choose `http/1.1`.
#[derive(Clone)]
pub struct Https {
    /// The HTTP API.
    pub router: axum::Router,
    /// Its limits.
    pub limits: HttpLimits,
    /// WebSocket sessions, if they are on.
    pub ws: Option<WsEndpoint>,
}

/// The ALPN id browsers send for HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Accepts connections until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    tls: Option<(tokio_rustls::TlsAcceptor, Option<Https>)>,
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
                Some((acceptor, https)) => {
                    Box::pin(async move {
                        let handshake = conns.config.handshake_timeout();
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream))
                                if tls_stream.get_ref().1.alpn_protocol() == Some(ALPN_HTTP1)
                                    && https.is_some() =>
                            {
                                let Https { router, limits, ws } = https.expect("checked");
                                http::connection(
                                    tls_stream,
                                    peer,
                                    router,
                                    limits,
                                    shutdown,
                                    ws,
                                    session_tasks,
                                )
                                .await;
                            }
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
