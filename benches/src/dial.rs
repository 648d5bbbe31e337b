//! How a scenario's clients reach the server: plain TCP, or QUIC over a few shared
//! client UDP endpoints (`--transport quic`), so one scenario measures either.

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
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
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
        quic: Option<&str>,
        cert_sha256: Option<&str>,
    ) -> anyhow::Result<Self> {
        Ok(match transport {
            Transport::Tcp => Dialer::Tcp(tcp.split(',').map(|a| a.trim().to_owned()).collect()),
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

    /// The TCP address connection number `i` goes to.
    pub fn tcp_addr(&self, i: usize) -> &str {
        match self {
            Dialer::Tcp(addrs) => &addrs[i % addrs.len()],
            Dialer::Quic { .. } => "",
        }
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
