//! Wiring: opens the store, binds the listeners, and shuts everything down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use courier_storage::{ManagedStore, Storage};
use courier_storage_pg::PgStore;

use crate::config::StorageBackend;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::members::MemberCache;
use crate::api::presence::Presence;
use crate::api::receipts::Receipts;
use crate::api::router::Router;
use crate::api::{http, Api};
use crate::cluster::delivery::{ClusterDelivery, PresenceView};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connection::registry::Registry;
use crate::connection::service::{Connections, Delivery};
use crate::connection::websocket::WsEndpoint;
use crate::connection::{certs, quic, tcp};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] courier_storage::StorageError),
    /// The certificate for QUIC/TLS could not be loaded or made.
    #[error("certificate: {0}")]
    Cert(#[from] crate::connection::certs::CertError),
    /// The media directory or its signing key could not be set up.
    #[error("media store: {source}")]
    Media {
        /// The error.
        source: std::io::Error,
    },
    /// Push could not start.
    #[error(transparent)]
    Push(#[from] crate::api::push::PushStartError),
    /// The webhook events' outbox could not be opened.
    #[error("webhook events outbox: {source}")]
    Webhooks {
        /// The error.
        source: std::io::Error,
    },
    /// The public keys of application tokens could not be loaded.
    #[error("application token keys: {0}")]
    AppTokens(#[from] crate::api::app_tokens::KeyError),
    /// The other nodes could not be reached.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A started server.
pub struct Server {
    api: Arc<Api>,
    conns: Arc<Connections>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    quic_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    cert_fingerprint: Option<String>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Opens the store, binds TCP and HTTP, and starts serving.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        // The connection layer's registry, which the API layer reaches devices through.
        let local = Arc::new(Registry::default());
        let members = Arc::new(MemberCache::new(config.member_cache_groups));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        // Past one node, devices elsewhere are reached through their node's inbox.
        let cluster = match config.cluster.enabled() {
            true => Some(
                Cluster::start(
                    &config.cluster,
                    local.clone(),
                    members.clone(),
                    shutdown.clone(),
                    &tasks,
                )
                .await?,
            ),
            false => None,
        };
        let (registry, presence_view): (Arc<dyn Delivery>, Arc<dyn Delivery>) = match &cluster {
            Some(c) => (
                Arc::new(ClusterDelivery(c.clone())),
                Arc::new(PresenceView(c.clone())),
            ),
            None => (local.clone(), local.clone()),
        };
        let events = crate::api::events::EventOutbox::open(&config)
            .map_err(|source| StartError::Webhooks { source })?
            .map(Arc::new);
        if let Some(outbox) = &events {
            tasks.spawn(outbox.clone().run(shutdown.clone()));
        }
        let push = crate::api::push::Push::open(&config)?.map(Arc::new);
        let router = Arc::new(
            Router::new(registry.clone(), members.clone())
                .with_events(events.clone())
                .with_push(push.clone()),
        );
        let store: Arc<dyn Storage> = match config.storage_backend {
            StorageBackend::Sled => {
                let store_config = config.store_config();
                let store = tokio::task::spawn_blocking(move || {
                    ManagedStore::open(store_config, Some(router))
                })
                .await
                .expect("store open task")?;
                Arc::new(store)
            }
            StorageBackend::Postgres => {
                Arc::new(PgStore::open(config.postgres_config(), Some(router)).await?)
            }
        };
        members.attach(store.clone());
        if let Some(cluster) = &cluster {
            cluster.serve_appends(store.clone(), shutdown.clone(), &tasks);
        }
        let (presence, presence_actor) =
            Presence::start(&config, presence_view, store.clone(), shutdown.clone());
        if let Some(cluster) = &cluster {
            cluster.attach_presence(presence.clone());
        }
        let (receipts, receipts_actor) = Receipts::start(
            &config,
            registry.clone(),
            members.clone(),
            store.clone(),
            shutdown.clone(),
        );
        tasks.spawn(presence_actor);
        tasks.spawn(receipts_actor);
        let media =
            crate::media::Media::open(&config).map_err(|source| StartError::Media { source })?;
        let api = Arc::new(
            Api::new(
                config.clone(),
                store,
                registry,
                members,
                presence,
                receipts,
                media,
            )
            .with_cluster(cluster)
            .with_app_tokens(crate::api::app_tokens::AppTokens::from_config(&config)?)
            .with_events(events)
            .with_push(push.clone()),
        );
        if let Some(cluster) = &api.cluster {
            cluster.serve_reactions(api.clone(), shutdown.clone(), &tasks);
        }
        if let Some(push) = push {
            tasks.spawn(push.run(api.clone(), shutdown.clone()));
        }
        if config.lifecycle_interval_secs > 0 {
            let (api, shutdown) = (api.clone(), shutdown.clone());
            let every = std::time::Duration::from_secs(config.lifecycle_interval_secs);
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            api.run_lifecycle(courier_storage::now_ms()).await;
                        }
                        _ = shutdown.cancelled() => break,
                    }
                }
            });
        }

        {
            // Rate-limit keys of clients gone quiet are forgotten every minute.
            let (api, shutdown) = (api.clone(), shutdown.clone());
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => api.limits.sweep(),
                        _ = shutdown.cancelled() => break,
                    }
                }
            });
        }

        let bind = |addr: SocketAddr| async move {
            listen(addr).map_err(|source| StartError::Bind { addr, source })
        };
        let conns = Arc::new(Connections {
            service: api.clone(),
            registry: local,
            metrics: api.metrics.clone(),
            budget: api.connections.clone(),
            config: config.clone(),
        });
        let tcp_listener = bind(config.tcp_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let tcp_addr = tcp_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.tcp_addr,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.http_addr,
                source,
            })?;

        tasks.spawn(tcp::serve(
            tcp_listener,
            conns.clone(),
            shutdown.clone(),
            tasks.clone(),
            None,
        ));

        // QUIC and TLS share one certificate.
        let needs_cert = config.quic_enabled || !config.tls_addr.is_empty();
        let cert = match needs_cert {
            true => Some(certs::load_or_generate(
                &config.tls_cert_path,
                &config.tls_key_path,
                &config.data_dir,
            )?),
            false => None,
        };
        let mut quic_addr = None;
        if let (true, Some(cert)) = (config.quic_enabled, &cert) {
            let endpoint = quic::endpoint(
                config.quic_addr,
                cert,
                config.idle_timeout(),
                config.quic_socket_buffer_bytes,
            )
            .map_err(|source| StartError::Bind {
                addr: config.quic_addr,
                source,
            })?;
            quic_addr = Some(endpoint.local_addr().map_err(|source| StartError::Bind {
                addr: config.quic_addr,
                source,
            })?);
            tasks.spawn(quic::serve(
                endpoint,
                conns.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        // WebSocket sessions, on the HTTP listener and (for `http/1.1` by ALPN) the TLS one.
        let ws = config.ws_enabled.then(|| WsEndpoint {
            conns: conns.clone(),
            allowed_origins: config.ws_origins().into(),
        });
        let mut tls_addr = None;
        if let (false, Some(cert)) = (config.tls_addr.is_empty(), &cert) {
            let addr: SocketAddr = config.tls_addr.parse().map_err(|_| {
                crate::config::ConfigError::Invalid("tls_addr must be empty or an address")
            })?;
            let listener = bind(addr).await?;
            tls_addr = Some(
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
            // Frames by default (ALPN `courier/1` or none); browsers choose `http/1.1`
            // and get the HTTP API and WebSocket sessions.
            let mut crypto = certs::server_crypto(cert)?;
            crypto.alpn_protocols.push(tcp::ALPN_HTTP1.to_vec());
            let https = tcp::Https {
                router: http::router(api.clone()),
                limits: config.http_limits(),
                ws: ws.clone(),
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(crypto));
            tasks.spawn(tcp::serve(
                listener,
                conns.clone(),
                shutdown.clone(),
                tasks.clone(),
                Some((acceptor, Some(https))),
            ));
        }
        let mut admin_addr = None;
        if !config.admin_addr.is_empty() {
            let addr: SocketAddr = config.admin_addr.parse().map_err(|_| {
                crate::config::ConfigError::Invalid("admin_addr must be empty or an address")
            })?;
            let listener = bind(addr).await?;
            admin_addr = Some(
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?,
            );
            tasks.spawn(crate::connection::http::serve(
                listener,
                http::operator_router(api.clone()),
                api.connections.clone(),
                config.http_limits(),
                shutdown.clone(),
                tasks.clone(),
                None,
            ));
        }
        tasks.spawn(crate::connection::http::serve(
            http_listener,
            http::router(api.clone()),
            api.connections.clone(),
            config.http_limits(),
            shutdown.clone(),
            tasks.clone(),
            ws,
        ));
        Ok(Self {
            api,
            conns,
            tcp_addr,
            http_addr,
            quic_addr,
            tls_addr,
            admin_addr,
            cert_fingerprint: cert.map(|c| c.fingerprint),
            shutdown,
            tasks,
        })
    }

    /// Where the binary protocol listens.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Where QUIC listens, if enabled.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// Where TLS over TCP listens, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Where the operator listener listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Hex SHA-256 of the QUIC/TLS certificate, for clients to pin.
    pub fn cert_fingerprint(&self) -> Option<&str> {
        self.cert_fingerprint.as_deref()
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// What the listeners and sessions share (for tests and embedding).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.conns
    }

    /// The API layer (for tests and embedding).
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Graceful shutdown: stop accepting, let in-flight sends finish, tell clients
    /// `GOING_AWAY`, then drain the store's queues and flush. Bounded by
    /// `shutdown_grace_ms` (the store drain is not: acknowledged writes must land).
    pub async fn shutdown(self) {
        let _ = self.shutdown_checked().await;
    }

    /// [`Self::shutdown`], telling whether the store's final flush succeeded (what an
    /// acknowledged write needs is in the commit logs either way, but a failed flush
    /// is worth an exit status).
    pub async fn shutdown_checked(self) -> Result<(), courier_storage::StorageError> {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.api.config.shutdown_grace(), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining connections");
        }
        match self.api.shut_down_store().await {
            Ok(()) => {
                tracing::info!("store flushed");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "store flush failed");
                Err(e)
            }
        }
    }
}

/// Pending connections a listener queues (the kernel caps it at `somaxconn`). A
/// reconnect storm brings thousands at once; with tokio's default of 1,024 the
/// excess SYNs are dropped and retried by the clients' kernels after 1 s, then 3 s.
const LISTEN_BACKLOG: u32 = 65_535;

/// A TCP listener on `addr` with a backlog fit for reconnect storms.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
