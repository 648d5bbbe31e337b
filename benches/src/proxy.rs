//! A TCP proxy the load generator puts between its clients and the server, so a
//! scenario can cut every connection at once (a network drop) and hold new ones off
//! until it reopens the way. Loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running proxy; it stops when dropped.
pub struct DropProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: AbortHandle,
}

#[derive(Default)]
struct Shared {
    closed: AtomicBool,
    links: Mutex<Vec<AbortHandle>>,
}

impl DropProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: String) -> std::io::Result<Self> {
        // A deep backlog: every client of a storm connects at once.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse().expect("an address"))?;
        let listener: TcpListener = socket.listen(65_535)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let client = match listener.accept().await {
                        Ok((client, _)) => client,
                        Err(_) => {
                            // Out of descriptors and the like: do not spin.
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    if shared.closed.load(Ordering::Acquire) {
                        // The network is down: the connection dies at once.
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let link = tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    shared
                        .links
                        .lock()
                        .expect("proxy lock")
                        .push(link.abort_handle());
                }
            })
            .abort_handle()
        };
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every open connection and refuses new ones until [`Self::reopen`].
    pub fn cut(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for link in self.shared.links.lock().expect("proxy lock").drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub fn reopen(&self) {
        self.shared.closed.store(false, Ordering::Release);
    }
}

impl Drop for DropProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
