//! A user-space UDP proxy for QUIC weak-network tests (there is no netem here): it
//! drops, delays, jitters (and so reorders) and duplicates datagrams both ways, can
//! black out for a while, and can change its source port towards the server (a NAT
//! rebinding, or a phone moving networks).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What happens to each datagram, each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairments {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// Fixed delay.
    pub delay: Duration,
    /// Extra random delay, uniform in `0..jitter` (reorders datagrams).
    pub jitter: Duration,
    /// Probability of sending a datagram twice.
    pub duplicate: f64,
}

struct Inner {
    server: SocketAddr,
    front: Arc<UdpSocket>,
    back: Mutex<Arc<UdpSocket>>,
    client: Mutex<Option<SocketAddr>>,
    impairments: Mutex<Impairments>,
    blackout_until: Mutex<Option<Instant>>,
    stop: CancellationToken,
}

/// The proxy; clients connect to `addr`. It stops when dropped.
pub struct UdpProxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

impl UdpProxy {
    pub async fn start(server: SocketAddr, impairments: Impairments) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inner = Arc::new(Inner {
            server,
            front: front.clone(),
            back: Mutex::new(back.clone()),
            client: Mutex::new(None),
            impairments: Mutex::new(impairments),
            blackout_until: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        tokio::spawn(front_loop(inner.clone()));
        tokio::spawn(back_loop(inner.clone(), back));
        Self {
            addr: front.local_addr().unwrap(),
            inner,
        }
    }

    /// Drops everything, both ways, for `duration`.
    pub fn blackout(&self, duration: Duration) {
        *self.inner.blackout_until.lock().unwrap() = Some(Instant::now() + duration);
    }

    /// Sends to the server from a new source port from now on.
    pub async fn rebind(&self) -> SocketAddr {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        *self.inner.back.lock().unwrap() = socket.clone();
        tokio::spawn(back_loop(self.inner.clone(), socket));
        addr
    }
}

async fn front_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            r = inner.front.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => continue },
            _ = inner.stop.cancelled() => return,
        };
        *inner.client.lock().unwrap() = Some(from);
        let back = inner.back.lock().unwrap().clone();
        forward(&inner, buf[..n].to_vec(), back, inner.server);
    }
}

async fn back_loop(inner: Arc<Inner>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = tokio::select! {
            r = socket.recv_from(&mut buf) => match r { Ok((n, _)) => n, Err(_) => continue },
            _ = inner.stop.cancelled() => return,
        };
        let Some(client) = *inner.client.lock().unwrap() else {
            continue;
        };
        forward(&inner, buf[..n].to_vec(), inner.front.clone(), client);
    }
}

fn forward(inner: &Inner, datagram: Vec<u8>, via: Arc<UdpSocket>, to: SocketAddr) {
    let dark = inner
        .blackout_until
        .lock()
        .unwrap()
        .is_some_and(|until| Instant::now() < until);
    let imp = *inner.impairments.lock().unwrap();
    let mut rng = rand::thread_rng();
    if dark || rng.gen_bool(imp.loss.clamp(0.0, 1.0)) {
        return;
    }
    let copies = if rng.gen_bool(imp.duplicate.clamp(0.0, 1.0)) {
        2
    } else {
        1
    };
    for _ in 0..copies {
        let jitter = if imp.jitter.is_zero() {
            Duration::ZERO
        } else {
            imp.jitter.mul_f64(rng.gen_range(0.0..1.0))
        };
        let delay = imp.delay + jitter;
        let (via, datagram) = (via.clone(), datagram.clone());
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = via.send_to(&datagram, to).await;
        });
    }
}
