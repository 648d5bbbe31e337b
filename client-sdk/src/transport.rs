//! Secure transports: QUIC (quinn) and TLS over TCP (rustls), with the server's
//! certificate either pinned by its SHA-256 fingerprint (what `courier serve` prints
//! for its self-signed certificate) or checked against a CA file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::client::{Client, ClientOptions, Events};
use crate::error::{Result, SdkError};

/// The ALPN protocol id of Courier.
pub const ALPN: &[u8] = b"courier/1";

/// How the client decides to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Accept exactly the certificate with this hex SHA-256 fingerprint.
    Pinned(String),
    /// Accept certificates signed by these PEM-encoded CA certificates.
    CaPem(Vec<u8>),
}

impl Trust {
    /// Trust the CAs in a PEM file.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Trust::CaPem(std::fs::read(path)?))
    }
}

fn tls_error(e: impl std::fmt::Display) -> SdkError {
    SdkError::Unexpected(format!("tls: {e}"))
}

/// A rustls client configuration for `trust` (TLS 1.3, ALPN `courier/1`, 0-RTT on).
pub fn client_crypto(trust: &Trust) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?;
    let mut config = match trust {
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: fingerprint.to_ascii_lowercase(),
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaPem(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots.add(cert?).map_err(tls_error)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = true;
    Ok(config)
}

/// Accepts only the certificate with a given fingerprint (and checks its signatures).
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A QUIC client endpoint. Keep one per app: it holds the session tickets that let
/// reconnects use 0-RTT.
#[derive(Clone)]
pub struct QuicConnector {
    zero_rtt: Arc<std::sync::atomic::AtomicU64>,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    server_name: String,
}

impl QuicConnector {
    /// An endpoint on an ephemeral local UDP port trusting the server per `trust`.
    /// `server_name` is checked against the certificate when trusting a CA.
    pub fn new(trust: &Trust, server_name: &str, keep_alive: Duration) -> Result<Self> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_crypto(trust)?)
            .map_err(tls_error)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(keep_alive));
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            client_socket()?,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self {
            zero_rtt: Arc::default(),
            endpoint,
            config,
            server_name: server_name.to_owned(),
        })
    }

    /// Connections opened with 0-RTT so far (a resumption ticket from an earlier
    /// connection let the handshake and the first frames share a round trip).
    pub fn zero_rtt_connections(&self) -> u64 {
        self.zero_rtt.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The local UDP address (it changes when the client migrates).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Rebinds the endpoint to a fresh local port: what a phone moving from Wi-Fi to
    /// cellular looks like. Open connections migrate to the new address.
    pub fn rebind(&self) -> Result<()> {
        self.endpoint.rebind(client_socket()?)?;
        Ok(())
    }

    /// Connects to `addr`, opens the frame stream and logs in with `token`. Uses
    /// 0-RTT when a ticket from an earlier connection allows it.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events)> {
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, &self.server_name)
            .map_err(|e| SdkError::Unexpected(format!("quic: {e}")))?;
        let (connection, zero_rtt_accepted) = match connecting.into_0rtt() {
            Ok((connection, accepted)) => (connection, Some(accepted)),
            Err(connecting) => (connecting.await.map_err(quic_error)?, None),
        };
        let first = log_in(&connection, token, options.clone()).await;
        let Some(accepted) = zero_rtt_accepted else {
            return first;
        };
        // Resolves once the handshake is done: whether the server took the early data.
        if accepted.await {
            self.zero_rtt
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return first;
        }
        match first {
            // The server refused the early data (its ticket key rotated, or it is
            // shedding load): the stream carrying Hello was reset, but the connection
            // carries on as a 1-RTT one, so log in again on a fresh stream.
            Err(_) => log_in(&connection, token, options).await,
            answered => answered,
        }
    }
}

/// Opens the frame stream on `connection` and logs in with `token`.
async fn log_in(
    connection: &quinn::Connection,
    token: &str,
    options: ClientOptions,
) -> Result<(Client, Events)> {
    let (send, recv) = connection.open_bi().await.map_err(quic_error)?;
    Client::handshake(recv, send, token, options).await
}

fn quic_error(e: impl std::fmt::Display) -> SdkError {
    SdkError::Io(std::io::Error::other(format!("quic: {e}")))
}

/// Receive/send buffer of a client's UDP socket: room for bursts of a busy
/// connection (the kernel default, ~208 KiB, drops datagrams under bursts).
const CLIENT_SOCKET_BUFFER_BYTES: usize = 1 << 20;

/// A UDP socket on an ephemeral local port.
fn client_socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(CLIENT_SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(CLIENT_SOCKET_BUFFER_BYTES)?;
    let any: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
    socket.bind(&any.into())?;
    Ok(socket.into())
}

/// Connects with TLS over TCP (for networks that block UDP) and logs in.
pub async fn connect_tls(
    addr: SocketAddr,
    trust: &Trust,
    server_name: &str,
    token: &str,
    options: ClientOptions,
) -> Result<(Client, Events)> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_crypto(trust)?));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(tls_error)?;
    let stream = connector.connect(name, tcp).await?;
    let (reader, writer) = tokio::io::split(stream);
    Client::handshake(reader, writer, token, options).await
}

/// Connects over WebSocket with TLS (`wss://host:port/v1/ws`, the server's TLS
/// listener, as a browser would: ALPN `http/1.1`) and logs in; `server_name` is
/// checked against the certificate when trusting a CA.
pub async fn connect_wss(
    url: &str,
    trust: &Trust,
    server_name: &str,
    token: &str,
    options: ClientOptions,
) -> Result<(Client, Events)> {
    let (host, path) = crate::client::ws_url(url, "wss://")?;
    let mut crypto = client_crypto(trust)?;
    crypto.alpn_protocols = vec![b"http/1.1".to_vec()];
    crypto.enable_early_data = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(crypto));
    let tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(tls_error)?;
    let stream = connector.connect(name, tcp).await?;
    let ws = courier_protocol::websocket::connect(stream, host, path, options.max_frame_bytes)
        .await
        .map_err(crate::client::upgrade_error)?;
    let (reader, writer) = tokio::io::split(ws);
    Client::handshake(reader, writer, token, options).await
}
