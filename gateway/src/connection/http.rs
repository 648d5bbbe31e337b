//! The HTTP listener: serves a router (the API layer's) over HTTP/1.1 with the limits
//! a public listener needs, in the same connection budget as the binary listeners.
//!
//! - headers must arrive in full within `header_timeout` (hyper's header read timer),
//!   so a slowloris client sending a byte now and then is closed;
//! - a connection that moves no byte for `idle_timeout` while no request is being
//!   handled is closed: idle keep-alive connections and stalled request bodies alike
//!   (how long a handler may take is the router's business: a request timeout);
//! - a connection past the budget is answered `503` with `Retry-After` at once;
//! - on shutdown, connections finish the request in hand and close, within the grace
//!   period.
//!
//! Each request carries the peer's address as `axum::extract::ConnectInfo`.
//! `GET /v1/ws` (when WebSocket sessions are on) is answered here, not by the
//! router: the connection then carries one session (see `websocket`), in the same
//! budget slot and task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::connection::accept::{refuse, Accepted, Acceptor};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::limits::ConnectionBudget;
use crate::connection::websocket::WsEndpoint;
use courier_protocol::websocket::WS_PATH;
use futures_util::future::Either;
use hyper::upgrade::OnUpgrade;
use std::sync::Mutex;

/// Largest buffered request head (request line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How an HTTP listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// The request head must arrive within this.
    pub header_timeout: Duration,
    /// A connection with no request in hand and no byte moving is closed after this.
    pub idle_timeout: Duration,
    /// On shutdown, connections get this long to finish.
    pub grace: Duration,
}

/// Serves `router` on `listener` until `shutdown` (and WebSocket sessions, with
/// `ws`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    budget: ConnectionBudget,
    limits: HttpLimits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    ws: Option<WsEndpoint>,
) {
    let acceptor = Acceptor::new(listener, budget, limits.idle_timeout, "http");
    while let Some(Accepted {
        stream,
        peer,
        permit,
    }) = acceptor.next(&shutdown).await
    {
        let Some(permit) = permit else {
            refuse(&stream, OVERLOADED_RESPONSE.as_bytes());
            continue;
        };
        let (router, shutdown) = (router.clone(), shutdown.clone());
        let (ws, session_tasks) = (ws.clone(), tasks.clone());
        tasks.spawn(async move {
            connection(stream, peer, router, limits, shutdown, ws, session_tasks).await;
            drop(permit);
        });
    }
}

/// The answer to a connection past the budget.
const OVERLOADED_RESPONSE: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Type: application/json\r\nContent-Length: 78\r\nConnection: close\r\n\r\n\
    {\"code\":401,\"name\":\"overloaded\",\"message\":\"too many connections; retry later\"}";

/// Serves one connection (plain, or TLS that chose `http/1.1` by ALPN on the TLS
/// listener) until it closes.
pub(crate) async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    ws: Option<WsEndpoint>,
    session_tasks: TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    // A WebSocket upgrade answered with 101, for this task to take over.
    let upgrade: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
    let taken = upgrade.clone();
    let endpoint = ws.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(ws) = endpoint.as_ref().filter(|_| req.uri().path() == WS_PATH) {
            let answer = ws.answer(req.method(), req.headers());
            if answer.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                *taken.lock().expect("upgrade slot") = Some(hyper::upgrade::on(&mut req));
            }
            return Either::Left(std::future::ready(Ok(answer)));
        }
        let in_hand = requests.start_request();
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = tower::ServiceExt::oneshot(router.clone(), req);
        Either::Right(async move {
            let response = response.await;
            drop(in_hand);
            response
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut hard_stop: Option<Instant> = None;
    loop {
        let idle_at = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "http connection ended");
                }
                let pending = upgrade.lock().expect("upgrade slot").take();
                if let (Some(on), Some(ws)) = (pending, ws) {
                    websocket::<S>(on, ws, shutdown, session_tasks).await;
                }
                return;
            }
            _ = sleep_until(idle_at), if hard_stop.is_none() => {
                if activity.requests_in_hand() == 0 && Instant::now() >= activity.idle_deadline(limits.idle_timeout) {
                    tracing::debug!(%peer, "http connection idle; closed");
                    return;
                }
            }
            _ = shutdown.cancelled(), if hard_stop.is_none() => {
                conn.as_mut().graceful_shutdown();
                hard_stop = Some(Instant::now() + limits.grace);
            }
            _ = sleep_until(hard_stop.unwrap_or_else(Instant::now)), if hard_stop.is_some() => return,
        }
    }
}

/// Takes the connection over once its upgrade to WebSocket is done, and runs the
/// session on it.
async fn websocket<S>(
    on: OnUpgrade,
    ws: WsEndpoint,
    shutdown: CancellationToken,
    session_tasks: TaskTracker,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgraded = match tokio::time::timeout(ws.conns.config.handshake_timeout(), on).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
        Err(_) => return,
    };
    match upgraded.downcast::<TokioIo<Tracked<S>>>() {
        Ok(parts) => {
            let stream = parts.io.into_inner().inner;
            ws.run(stream, parts.read_buf, shutdown, session_tasks)
                .await;
        }
        Err(_) => tracing::warn!("a websocket upgrade over an unexpected stream"),
    }
}

/// When a connection last moved a byte, and how many requests it has in hand.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_hand: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_hand: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn requests_in_hand(&self) -> usize {
        self.in_hand.load(Ordering::Relaxed)
    }

    fn start_request(self: &Arc<Self>) -> InHand {
        self.in_hand.fetch_add(1, Ordering::Relaxed);
        InHand(self.clone())
    }
}

/// A request being handled; the count drops when its handler is done.
struct InHand(Arc<Activity>);

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.in_hand.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes every byte it moves.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overloaded_answer_is_well_formed() {
        let (head, body) = OVERLOADED_RESPONSE.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], courier_protocol::ErrorCode::Overloaded as i32);
    }
}
