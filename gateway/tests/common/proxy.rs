//! A user-space TCP proxy for weak-network tests (there is no netem here): it can
//! delay every chunk, and black the network out — existing connections are reset
//! and new ones refused until the blackout ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct State {
    upstream: SocketAddr,
    delay: Duration,
    blackout_until: Mutex<Option<Instant>>,
    /// Cancelled to reset every connection of the current generation.
    generation: Mutex<CancellationToken>,
}

/// The proxy; it stops when dropped.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.generation.lock().unwrap().cancel();
    }
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            delay,
            blackout_until: Mutex::new(None),
            generation: Mutex::new(CancellationToken::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, state.clone(), stop.clone()));
        Self { addr, state, stop }
    }

    /// Resets every connection now and refuses new ones for `duration`.
    pub fn blackout(&self, duration: Duration) {
        *self.state.blackout_until.lock().unwrap() = Some(Instant::now() + duration);
        let mut generation = self.state.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, stop: CancellationToken) {
    loop {
        let (client, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = stop.cancelled() => return,
        };
        let dark = state
            .blackout_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until);
        if dark {
            // Refused: closed at once.
            drop(client);
            continue;
        }
        let token = state.generation.lock().unwrap().clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(state.upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::select! {
                _ = pump(cr, sw, state.delay) => {}
                _ = pump(sr, cw, state.delay) => {}
                _ = token.cancelled() => {}
            }
        });
    }
}

/// Copies one direction through a delay line: every chunk is written `delay` after
/// it was read, in order, without limiting throughput.
async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut from = from;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
