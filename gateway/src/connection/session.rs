//! One client session over any ordered byte stream (TCP, TLS, or a QUIC stream).
//!
//! A session is one task running one `select!` over: inbound frames, its outbound
//! queue (which also carries the close switch: slow consumer, replaced device), the
//! idle timer and the server's shutdown signal. Queued frames are coalesced into one
//! write. While idle a session holds no read or write buffer.
//! Sends run as separate tasks so several can wait for the group commit at once;
//! their number is capped per connection, and reading pauses at the cap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier_protocol::pb::{frame::Kind, Frame};
use courier_protocol::wire::{decode_inbound, Inbound};
use courier_protocol::{decode_frame, encode_frame, CodecError, ErrorCode, FrameCodec};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::outbound::{Outbound, OutboundQueue, Ready};
use crate::connection::reader::FrameReader;
use crate::connection::service::{Connections, Handled, SessionCredential, SessionCtx};
use crate::metrics::Transport;
use std::sync::atomic::Ordering;

/// Bytes of queued frames written with one syscall at most.
const MAX_WRITE_BATCH: usize = 64 * 1024;
/// How long a final frame (Kick, Error) may take to write before we give up.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes all of `buf` by a deadline: `write_timeout` after the socket first pushes
/// back, and no later than the end of the shutdown grace period once the server is
/// shutting down. A peer that stops reading cannot hold a session, its queue or its
/// descriptor past that. While the socket takes the bytes no timer is armed and
/// nothing is allocated; the deadline is a boxed future, so that idle sessions do not
/// carry its timer (a hand-written future, for the same reason: it is small).
fn write_bounded<'a, W: AsyncWrite + Unpin + Send>(
    writer: &'a mut W,
    buf: &'a [u8],
    config: &'a Config,
    shutdown: &'a CancellationToken,
) -> WriteBounded<'a, W> {
    WriteBounded {
        writer: Some(writer),
        buf,
        config,
        shutdown,
        slow: None,
    }
}

/// The future of [`write_bounded`].
struct WriteBounded<'a, W> {
    writer: Option<&'a mut W>,
    /// What is left to write.
    buf: &'a [u8],
    config: &'a Config,
    shutdown: &'a CancellationToken,
    slow: Option<Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>>,
}

impl<'a, W: AsyncWrite + Unpin + Send> Future for WriteBounded<'a, W> {
    type Output = std::io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(slow) = this.slow.as_mut() {
            return slow.as_mut().poll(cx);
        }
        let Some(writer) = this.writer.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            let polled = match this.buf.is_empty() {
                false => Pin::new(&mut **writer).poll_write(cx, this.buf),
                // Written: pushed out of any buffer the writer keeps (TLS records,
                // WebSocket frames); a no-op on TCP.
                true => match Pin::new(&mut **writer).poll_flush(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                },
            };
            match polled {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => this.buf = &this.buf[n..],
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The socket pushes back: from here on the write has a deadline.
                    let writer = this.writer.take().expect("writer");
                    let mut slow = Box::pin(write_by_deadline(
                        writer,
                        this.buf,
                        this.config,
                        this.shutdown,
                    ));
                    let polled = slow.as_mut().poll(cx);
                    this.slow = Some(slow);
                    return polled;
                }
            }
        }
    }
}

async fn write_by_deadline<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
    config: &Config,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(buf).await?;
        writer.flush().await
    };
    tokio::pin!(write);
    let deadline = tokio::time::sleep(config.write_timeout());
    tokio::pin!(deadline);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            done = &mut write => return done,
            _ = &mut deadline => return Err(std::io::ErrorKind::TimedOut.into()),
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                let by_grace = Instant::now() + config.shutdown_grace();
                if by_grace < deadline.deadline() {
                    deadline.as_mut().reset(by_grace);
                }
            }
        }
    }
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The client closed the stream.
    ClientClosed,
    /// We close with this code (after telling the client).
    Close(ErrorCode, String),
    /// The transport failed; nothing more can be written.
    Broken,
    /// A write missed its deadline: the peer does not read. Nothing more can be
    /// written either.
    Stalled,
}

impl End {
    fn after_write(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::TimedOut => End::Stalled,
            _ => End::Broken,
        }
    }
}

/// Runs a session to its end.
pub async fn run<R, W>(
    reader: R,
    mut writer: W,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    transport: Transport,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let config = conns.config.clone();
    let mut frames = FrameReader::new(reader, FrameCodec::new(config.max_frame_bytes));
    // Boxed, like every rarely taken await below: a session's future lives as long as
    // the connection, and its size is the idle connection's memory.
    let Some((ctx, credential, welcome)) =
        Box::pin(handshake(&mut frames, &mut writer, &conns, &shutdown)).await
    else {
        return;
    };
    let (user_id, session_id) = (ctx.user_id, ctx.session_id);
    let (outbound, mut queue) = Outbound::channel(config.outbound_queue_frames);
    // Registered before the Welcome goes out: once the client holds it, it is online
    // and receives (what is queued meanwhile follows the Welcome).
    if conns.registry.register(
        user_id,
        session_id,
        ctx.device_id.clone(),
        credential.hash,
        outbound.clone(),
    ) {
        if let Some(announced) = conns.service.user_online(user_id) {
            announced.await;
        }
    }
    let sent = Box::pin(tokio::time::timeout(config.handshake_timeout(), async {
        writer.write_all(&welcome).await?;
        writer.flush().await
    }));
    if !matches!(sent.await, Ok(Ok(()))) {
        if conns.registry.unregister(user_id, session_id) {
            conns.service.user_offline(user_id);
        }
        return;
    }
    drop(welcome);
    conns.metrics.handshake(transport);
    conns.metrics.session(transport, 1);
    tracing::debug!(user_id, session_id, device = %ctx.device_id, "session open");

    let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection));
    let idle_timeout = config.idle_timeout();
    let mut last_seen = Instant::now();
    // One timer serves the idle timeout and the token's expiry (a second timer would
    // widen every idle session).
    let mut credential_ends_ms = credential.expires_ms;
    let idle = sleep_until((last_seen + idle_timeout).min(instant_of(credential_ends_ms)));
    tokio::pin!(idle);
    let mut bad_frames = 0u32;
    let mut io = Io {
        writer,
        out: BytesMut::new(),
        conns: &conns,
        shutdown: &shutdown,
    };

    let end = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // Let in-flight sends finish and their acks go out before we leave.
                if let Err(e) = Box::pin(drain_in_flight(&in_flight, config.max_in_flight_per_connection, &mut queue, &mut io, config.shutdown_grace())).await {
                    break End::after_write(e);
                }
                break End::Close(ErrorCode::GoingAway, "server is shutting down".into());
            }
            ready = queue.ready() => match ready {
                Ready::Closed(code) => break End::Close(code, "session closed by the server".into()),
                Ready::Frames => if let Err(e) = io.write_queued(&mut queue).await {
                    break End::after_write(e);
                },
            },
            inbound = frames.next() => {
                let payload = match inbound {
                    None => break End::ClientClosed,
                    Some(Err(CodecError::Io(_))) => break End::Broken,
                    Some(Err(e @ CodecError::FrameTooLarge { .. })) => break End::Close(ErrorCode::FrameTooLarge, e.to_string()),
                    Some(Err(e)) => break End::Close(ErrorCode::MalformedFrame, e.to_string()),
                    Some(Ok(payload)) => payload,
                };
                last_seen = Instant::now();
                conns.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
                let frame = match decode_inbound(payload) {
                    Ok(frame) => frame,
                    Err(e) => {
                        bad_frames += 1;
                        if bad_frames > config.max_bad_frames {
                            break End::Close(ErrorCode::ProtocolViolation, "too many malformed frames".into());
                        }
                        // Encoded in one statement: the frame is not kept across the write.
                        let reply = encode_frame(&codec_error_frame(0, &e));
                        if let Err(e) = io.write(&reply).await {
                            break End::after_write(e);
                        }
                        continue;
                    }
                };
                if matches!(&frame, Inbound::Other(f) if f.kind.is_none()) {
                    bad_frames += 1;
                    if bad_frames > config.max_bad_frames {
                        break End::Close(ErrorCode::ProtocolViolation, "too many unknown frames".into());
                    }
                }
                // A reply is encoded before the write: a `Frame` is several hundred
                // bytes that would otherwise be kept in every session's future.
                let reply = match conns.service.clone().on_frame(&ctx, frame).await {
                    Handled::Nothing => None,
                    Handled::Reply(reply) => Some(encode_frame(&reply)),
                    Handled::Later(pending) => {
                        let permit = match in_flight.clone().try_acquire_owned() {
                            Ok(p) => Ok(p),
                            Err(_) => Box::pin(wait_for_permit(&in_flight, &mut queue, &mut io)).await,
                        };
                        let permit = match permit {
                            Ok(p) => p,
                            Err(e) => break End::after_write(e),
                        };
                        let outbound = outbound.clone();
                        tasks.spawn(async move {
                            if let Some(reply) = pending.await {
                                outbound.reply(encode_frame(&reply));
                            }
                            drop(permit);
                        });
                        None
                    }
                };
                if let Some(reply) = reply {
                    if let Err(e) = io.write(&reply).await {
                        break End::after_write(e);
                    }
                }
            }
            _ = &mut idle => {
                let now = Instant::now();
                if courier_storage::now_ms() >= credential_ends_ms {
                    // Re-checked rather than assumed: a token may be extended.
                    let expires = match conns.registry.credential_of(user_id, session_id) {
                        Some(c) => conns.service.credential_expires(&c).await,
                        None => None,
                    };
                    match expires {
                        Some(expires) => credential_ends_ms = expires,
                        None => break End::Close(ErrorCode::LoggedOut, "the session's token expired".into()),
                    }
                }
                let deadline = last_seen + idle_timeout;
                if now >= deadline {
                    break End::Close(ErrorCode::IdleTimeout, "no frames within the idle timeout".into());
                }
                idle.as_mut().reset(deadline.min(instant_of(credential_ends_ms)));
            }
        }
    };

    conns.metrics.session(transport, -1);
    if conns.registry.unregister(user_id, session_id) {
        conns.service.user_offline(user_id);
    }
    tracing::debug!(user_id, session_id, reason = ?end, "session closed");
    match end {
        End::Close(code, reason) => {
            if code == ErrorCode::SlowConsumer {
                conns.metrics.slow_closes.fetch_add(1, Ordering::Relaxed);
            }
            // Whatever is still queued goes out first, then the reason.
            let Io {
                mut writer,
                mut out,
                ..
            } = io;
            out.clear();
            queue.drain_into(&mut out, usize::MAX);
            out.extend_from_slice(&encode_frame(&Frame::kick(code, reason)));
            let _ = Box::pin(tokio::time::timeout(FINAL_WRITE_TIMEOUT, async {
                writer.write_all(&out).await?;
                writer.shutdown().await
            }))
            .await;
        }
        End::Stalled => {
            // The peer stopped reading: nothing can reach it, so no Kick is tried.
            conns.metrics.slow_closes.fetch_add(1, Ordering::Relaxed);
            conns.metrics.stalled_writes.fetch_add(1, Ordering::Relaxed);
        }
        End::ClientClosed | End::Broken => {}
    }
}

/// A session's writing side: its writer and batch buffer, and what bounds a write.
struct Io<'a, W> {
    writer: W,
    out: BytesMut,
    conns: &'a Connections,
    shutdown: &'a CancellationToken,
}

impl<W: AsyncWrite + Unpin + Send> Io<'_, W> {
    /// Writes encoded frames now (a reply).
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_bounded(&mut self.writer, bytes, &self.conns.config, self.shutdown).await
    }

    /// Writes what is queued, coalesced into few writes.
    async fn write_queued(&mut self, queue: &mut OutboundQueue) -> std::io::Result<()> {
        let (config, metrics) = (&self.conns.config, &self.conns.metrics);
        metrics.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(frame) = queue.take_single() {
            // The common case of one frame: no copy.
            metrics.frames_out.fetch_add(1, Ordering::Relaxed);
            return write_bounded(&mut self.writer, &frame, config, self.shutdown).await;
        }
        self.out.clear();
        let frames = queue.drain_into(&mut self.out, MAX_WRITE_BATCH);
        metrics
            .frames_out
            .fetch_add(frames as u64, Ordering::Relaxed);
        let result = write_bounded(&mut self.writer, &self.out, config, self.shutdown).await;
        // A connection going quiet keeps no write buffer.
        self.out = BytesMut::new();
        result
    }
}

/// Reads the Hello (the first frame, in time) and checks it: returns the session
/// and its encoded Welcome (for the caller to send), or answers an error and
/// returns None.
async fn handshake<R, W>(
    frames: &mut FrameReader<R>,
    writer: &mut W,
    conns: &Connections,
    shutdown: &CancellationToken,
) -> Option<(SessionCtx, SessionCredential, Bytes)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let session_id = conns.registry.next_session_id();
    let first = tokio::select! {
        f = tokio::time::timeout(conns.config.handshake_timeout(), frames.next()) => f,
        _ = shutdown.cancelled() => return None,
    };
    let answer = match first {
        Err(_) => Err(Some(Frame::error(
            0,
            ErrorCode::HandshakeTimeout,
            "no Hello in time",
        ))),
        Ok(None) | Ok(Some(Err(CodecError::Io(_)))) => Err(None),
        Ok(Some(Err(e))) => Err(Some(codec_error_frame(0, &e))),
        Ok(Some(Ok(payload))) => match decode_frame(payload) {
            Ok(Frame {
                request_id,
                kind: Some(Kind::Hello(hello)),
            }) => match conns.service.handshake(&hello, session_id).await {
                Ok((ctx, credential, welcome)) => Ok((request_id, ctx, credential, welcome)),
                Err(e) => {
                    conns
                        .metrics
                        .handshake_failures
                        .fetch_add(1, Ordering::Relaxed);
                    Err(Some(e.to_frame(request_id)))
                }
            },
            Ok(other) => Err(Some(Frame::error(
                other.request_id,
                ErrorCode::Unauthenticated,
                "the first frame must be Hello",
            ))),
            Err(e) => Err(Some(codec_error_frame(0, &e))),
        },
    };
    let (hello_id, ctx, credential, mut welcome) = match answer {
        Ok(ok) => ok,
        Err(refusal) => {
            if let Some(frame) = refusal {
                finish(writer, &frame).await;
            }
            return None;
        }
    };
    welcome.request_id = hello_id;
    Some((ctx, credential, encode_frame(&welcome)))
}

/// At the cap of sends in flight: stops reading, keeps writing until a send completes.
async fn wait_for_permit<W: AsyncWrite + Unpin + Send>(
    in_flight: &Arc<Semaphore>,
    queue: &mut OutboundQueue,
    io: &mut Io<'_, W>,
) -> std::io::Result<tokio::sync::OwnedSemaphorePermit> {
    loop {
        tokio::select! {
            p = in_flight.clone().acquire_owned() => {
                return p.map_err(|_| std::io::ErrorKind::BrokenPipe.into());
            }
            _ = queue.frames() => io.write_queued(queue).await?,
        }
    }
}

/// Waits (writing queued frames meanwhile) until no send is in flight, or `grace`.
async fn drain_in_flight<W: AsyncWrite + Unpin + Send>(
    in_flight: &Arc<Semaphore>,
    permits: usize,
    queue: &mut OutboundQueue,
    io: &mut Io<'_, W>,
    grace: Duration,
) -> std::io::Result<()> {
    let deadline = Instant::now() + grace;
    loop {
        tokio::select! {
            all = in_flight.acquire_many(permits as u32) => {
                drop(all);
                return Ok(());
            }
            _ = queue.frames() => io.write_queued(queue).await?,
            _ = sleep_until(deadline) => return Ok(()),
        }
    }
}

/// The instant of a wall-clock time in ms since the Unix epoch.
fn instant_of(epoch_ms: u64) -> Instant {
    let from_now = epoch_ms.saturating_sub(courier_storage::now_ms());
    // Far futures are capped (a timer that far out would only be reset anyway).
    Instant::now() + Duration::from_millis(from_now.min(365 * 24 * 3600 * 1000))
}

fn codec_error_frame(request_id: u64, e: &CodecError) -> Frame {
    let code = match e {
        CodecError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::MalformedFrame,
    };
    Frame::error(request_id, code, e.to_string())
}

/// Writes one last frame and closes the stream.
async fn finish<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) {
    let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, async {
        writer.write_all(&encode_frame(frame)).await?;
        writer.shutdown().await
    })
    .await;
}
