//! The QUIC listener (quinn): one long-lived bidirectional stream per connection
//! carries the same frames as TCP, so the session code is shared. QUIC gives weak
//! networks what TCP cannot: the connection survives an address change (NAT
//! rebinding, Wi-Fi to cellular) without a new login, losses do not stall a whole
//! byte stream at the kernel, and reconnects may use 0-RTT (our sends are idempotent,
//! so a replayed early Send is stored once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::certs::{server_crypto, CertError, ServerCert};
use crate::connection::service::Connections;
use crate::connection::session;
use crate::metrics::Transport;

/// The QUIC application close code for "server going away".
pub const CLOSE_GOING_AWAY: u32 = 500;

/// Binds a QUIC endpoint on `addr` with `cert`, its UDP socket buffers sized
/// `socket_buffer_bytes`.
pub fn endpoint(
    addr: SocketAddr,
    cert: &ServerCert,
    idle_timeout: Duration,
    socket_buffer_bytes: usize,
) -> Result<quinn::Endpoint, std::io::Error> {
    let tls = |e: CertError| std::io::Error::other(e.to_string());
    let mut crypto = server_crypto(cert).map_err(tls)?;
    // 0-RTT: early data is accepted; every frame it can carry is idempotent.
    crypto.max_early_data_size = u32::MAX;
    let crypto =
        QuicServerConfig::try_from(crypto).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        idle_timeout
            .try_into()
            .map_err(|_| std::io::Error::other("idle timeout out of range"))?,
    ));
    transport.max_concurrent_bidi_streams(2u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    config.migration(true);
    let socket = udp_socket(addr, socket_buffer_bytes)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// A UDP socket bound to `addr` with receive and send buffers of `buffer_bytes`.
fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_recv_buffer_size(buffer_bytes)?;
    socket.set_send_buffer_size(buffer_bytes)?;
    // The kernel silently caps the sizes at net.core.rmem_max / wmem_max (and
    // reports twice what it grants); a privileged server may go past the cap.
    if socket.recv_buffer_size()? / 2 < buffer_bytes {
        force_buffers(&socket, buffer_bytes);
        let granted = socket.recv_buffer_size()? / 2;
        if granted < buffer_bytes {
            tracing::warn!(
                requested = buffer_bytes,
                granted,
                "QUIC socket buffer capped by the kernel; raise net.core.rmem_max and \
                 net.core.wmem_max to avoid dropped datagrams under load"
            );
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE`: past the sysctl caps, with CAP_NET_ADMIN.
#[cfg(target_os = "linux")]
fn force_buffers(socket: &socket2::Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(socket, sockopt::RcvBufForce, &bytes);
    let _ = setsockopt(socket, sockopt::SndBufForce, &bytes);
}

#[cfg(not(target_os = "linux"))]
fn force_buffers(_socket: &socket2::Socket, _bytes: usize) {}

/// Accepts QUIC connections until `shutdown`, then closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(permit) = conns.budget.admit_datagram() else {
            incoming.refuse();
            continue;
        };
        let (conns, shutdown, session_tasks) = (conns.clone(), shutdown.clone(), tasks.clone());
        tasks.spawn(async move {
            if let Err(e) = connection(incoming, conns, shutdown, session_tasks).await {
                tracing::debug!(error = %e, "quic connection ended");
            }
            drop(permit);
        });
    }
    endpoint.close(CLOSE_GOING_AWAY.into(), b"going away");
    // Let the close frames reach the peers before the socket goes (the shutdown
    // grace period bounds this, as it bounds every tracked task).
    endpoint.wait_idle().await;
}

async fn connection(
    incoming: quinn::Incoming,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<(), quinn::ConnectionError> {
    let connecting = incoming.accept()?;
    let connection = match connecting.into_0rtt() {
        Ok((connection, _accepted)) => connection,
        Err(connecting) => connecting.await?,
    };
    let handshake = conns.config.handshake_timeout();
    let (send, recv) = match tokio::time::timeout(handshake, connection.accept_bi()).await {
        Ok(streams) => streams?,
        Err(_) => {
            connection.close(105u32.into(), b"no stream in time");
            return Ok(());
        }
    };
    session::run(recv, send, conns, shutdown, tasks, Transport::Quic).await;
    // Dropping the connection now could discard the last frames (an Error, a Kick)
    // still in flight: give the client a moment to read them and close first.
    let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
    Ok(())
}
