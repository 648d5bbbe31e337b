//! `courier`: the Courier server binary.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use courier_gateway::{Config, Server};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "courier", version, about = "Courier instant-messaging server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Settings come from embedded defaults, then the TOML file, then
    /// COURIER_* environment variables, then these flags.
    Serve(ServeArgs),
    /// Print the effective configuration as TOML and exit.
    Config(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TCP listen address for the binary protocol.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// HTTP listen address.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// QUIC (UDP) listen address.
    #[arg(long)]
    quic: Option<SocketAddr>,
    /// TLS-over-TCP listen address (off unless given).
    #[arg(long)]
    tls: Option<SocketAddr>,
    /// Store shards (only when creating a data directory).
    #[arg(long)]
    shards: Option<usize>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(addr) = self.tcp {
            config.tcp_addr = addr;
        }
        if let Some(addr) = self.http {
            config.http_addr = addr;
        }
        if let Some(addr) = self.quic {
            config.quic_addr = addr;
        }
        if let Some(addr) = self.tls {
            config.tls_addr = addr.to_string();
        }
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(args) => {
            print!("{}", toml::to_string(&args.config()?)?);
            Ok(())
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_env("COURIER_LOG")
                        .unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            let config = args.config()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?
                .block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = Server::start(config).await?;
    tracing::info!(
        tcp = %server.tcp_addr(),
        http = %server.http_addr(),
        quic = ?server.quic_addr(),
        tls = ?server.tls_addr(),
        admin = ?server.admin_addr(),
        cert_sha256 = server.cert_fingerprint().unwrap_or("-"),
        data_dir = %data_dir.display(),
        "courier is serving"
    );
    // One machine-readable line on stdout, for scripts and tests.
    let line = serde_json::json!({
        "event": "listening",
        "tcp": server.tcp_addr().to_string(),
        "http": format!("http://{}", server.http_addr()),
        "quic": server.quic_addr().map(|a| a.to_string()),
        "tls": server.tls_addr().map(|a| a.to_string()),
        "admin": server.admin_addr().map(|a| format!("http://{a}")),
        "cert_sha256": server.cert_fingerprint(),
        "data_dir": data_dir.display().to_string(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);

    wait_for_signal().await?;
    tracing::info!("shutting down");
    server
        .shutdown_checked()
        .await
        .context("the store's final flush failed")?;
    tracing::info!("bye");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
