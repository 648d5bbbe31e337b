//! How a scenario's clients reach the server: plain TCP, QUIC over a few shared
//! client UDP endpoints (`--transport quic`), or WebSocket on the HTTP listener
//! (`--transport ws`, as browsers connect), so one scenario measures each.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use courier_sdk::{Client, ClientOptions, Events, QuicConnector, Trust};

/// The transport a scenario's clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Tcp,
    Quic,
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Ws => "ws",
        }
    }
}

/// QUIC client connections per client UDP endpoint: enough endpoints that one
/// socket's receive path does not become the client's bottleneck.
const CONNECTIONS_PER_ENDPOINT: usize = 250;

/// Opens authenticated connections over the chosen transport.
pub enum Dialer {
    /// TCP to one server, or to several nodes in turn.
    Tcp(Vec<String>),
    /// WebSocket to the HTTP listener (`host:port`) of one server or of several.
    Ws(Vec<String>),
    Quic {
        addr: SocketAddr,
        pin: String,
        endpoints: std::sync::Mutex<Vec<QuicConnector>>,
    },
}

impl Dialer {
    pub fn new(
        transport: Transport,
        tcp: &str,
        http: &str,
        quic: Option<&str>,
        cert_sha256: Option<&str>,
    ) -> anyhow::Result<Self> {
        let list = |s: &str| -> Vec<String> { s.split(',').map(|a| a.trim().to_owned()).collect() };
        Ok(match transport {
            Transport::Tcp => Dialer::Tcp(list(tcp)),
            Transport::Ws => Dialer::Ws(
                list(http)
                    .iter()
                    .map(|h| {
                        h.strip_prefix("http://")
                            .map(|h| h.trim_end_matches('/').to_owned())
                            .context("--transport ws needs an http:// --http address")
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
            Transport::Quic => Dialer::Quic {
                addr: quic
                    .context("the server's QUIC address (--quic)")?
                    .parse()?,
                pin: cert_sha256
                    .context("the server's certificate fingerprint (--cert-sha256)")?
                    .to_owned(),
                endpoints: Default::default(),
            },
        })
    }

    /// The TCP address connection number `i` goes to (for WebSocket, the HTTP
    /// listener's).
    pub fn tcp_addr(&self, i: usize) -> &str {
        match self {
            Dialer::Tcp(addrs) | Dialer::Ws(addrs) => &addrs[i % addrs.len()],
            Dialer::Quic { .. } => "",
        }
    }

    /// Whether connections speak WebSocket.
    pub fn is_ws(&self) -> bool {
        matches!(self, Dialer::Ws(_))
    }

    /// Connection number `i` of a scenario, logged in with `token`.
    pub async fn connect(
        &self,
        i: usize,
        token: &str,
        options: ClientOptions,
    ) -> anyhow::Result<(Client, Events)> {
        match self {
            Dialer::Tcp(_) => Ok(Client::connect(self.tcp_addr(i), token, options).await?),
            Dialer::Ws(_) => {
                let url = format!("ws://{}/v1/ws", self.tcp_addr(i));
                Ok(Client::connect_ws(&url, token, options).await?)
            }
            Dialer::Quic {
                addr,
                pin,
                endpoints,
            } => {
                let endpoint = {
                    let mut endpoints = endpoints.lock().expect("not poisoned");
                    let slot = i / CONNECTIONS_PER_ENDPOINT;
                    while endpoints.len() <= slot {
                        endpoints.push(QuicConnector::new(
                            &Trust::Pinned(pin.clone()),
                            "localhost",
                            Duration::from_secs(20),
                        )?);
                    }
                    endpoints[slot].clone()
                };
                Ok(endpoint.connect(*addr, token, options).await?)
            }
        }
    }
}
