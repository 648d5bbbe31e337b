//! `courier-bench`: the load generator. Each scenario sets up its own users (through
//! the real HTTP API), drives the server over loopback, and prints one JSON line with
//! the figures `../shared/BENCHMARKS.md` asks for. Every run is bounded in count and
//! time. `--spawn-server` starts `courier serve` on a temporary data directory so one
//! command yields a figure; `--server-pid` reads a running server's RSS and CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use courier_sdk::{
    pb, Client, ClientOptions, ConversationId, Event, HttpClient, LoginInfo, NewGroup,
};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use dial::{Dialer, Transport};

mod dial;
mod fill;
mod lean;
mod presence_storm;
mod proxy;
mod quic_scale;
mod reconnect_storm;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    /// N authenticated connections held open: connect rate and memory per connection.
    Idle,
    /// 1,000 pairs x 100 messages, 10 in flight each, durable acks.
    Pair,
    /// 10 pairs x 200 messages, 1 in flight: latency without queueing.
    PairLight,
    /// One 1,000-member group, all online; 10 senders x 100 messages, 5 in flight.
    Group,
    /// Page through a 100,000-message conversation, 20 and 100 per page.
    History,
    /// A user with 5,000 friends (1,000 online) flaps 10 times in 2 s.
    PresenceStorm,
    /// 10,000 sessions drop at once, miss 10 messages each, reconnect and resync.
    ReconnectStorm,
    /// `idle` over QUIC in steps past the TCP descriptor cap (25k, 50k, 100k).
    QuicScale,
    /// Store 10 million 100-byte messages over 1,000 conversations: RSS throughout,
    /// bytes on disk per message, time from restart to serving (--spawn-server).
    Fill,
    /// Internal: one worker process of `reconnect-storm`, driven over stdin.
    #[value(hide = true)]
    ReconnectWorker,
}

#[derive(Parser)]
#[command(
    name = "courier-bench",
    about = "Courier load generator (one JSON line per run)"
)]
struct Args {
    scenario: Scenario,
    /// Transport of the scenario's connections (idle, pair, pair-light, group).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Server TCP address; several, comma-separated, are the nodes of one
    /// deployment: connection i goes to node i mod n (in `pair` a sender and its
    /// receiver are then always on different nodes).
    #[arg(long, alias = "servers", default_value = "127.0.0.1:7100")]
    server: String,
    /// Server HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:7180")]
    http: String,
    /// Server QUIC address (quic-scale, --transport quic).
    #[arg(long, default_value = "127.0.0.1:7100")]
    quic: String,
    /// SHA-256 fingerprint of the server's certificate, to pin (QUIC).
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Start `courier serve` on a temporary data directory (path of the binary, or
    /// found next to this one).
    #[arg(long)]
    spawn_server: bool,
    /// The server's pid, to read its RSS and CPU from /proc (comma-separated for
    /// several nodes: their sum).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The server's admin token, for its operator routes (presence-storm reads
    /// `/v1/stats`); `--spawn-server` makes one.
    #[arg(long, env = "COURIER_ADMIN_TOKEN", default_value = "")]
    admin_token: String,
    /// Connections (idle), pairs (pair, pair-light), members (group).
    #[arg(long)]
    n: Option<usize>,
    /// Messages per sender (pair, pair-light, group) or in the log (history).
    #[arg(long)]
    messages: Option<usize>,
    /// Sends in flight per sender.
    #[arg(long)]
    in_flight: Option<usize>,
    /// Seconds to hold idle connections.
    #[arg(long, default_value_t = 20)]
    hold_secs: u64,
    /// Online friends (presence-storm; default a fifth of --n).
    #[arg(long)]
    online: Option<usize>,
    /// Milliseconds to let presence settle before and after the storm.
    #[arg(long, default_value_t = 4_000)]
    settle_ms: u64,
    /// Connection counts to step through (quic-scale).
    #[arg(long, value_delimiter = ',', default_value = "25000,50000,100000")]
    steps: Vec<usize>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// How `group`'s receiving members read (the SDK's full path, or the lean one
    /// that reads deliveries in place; TCP only).
    #[arg(long, value_enum, default_value_t = ReceiverKind::Lean)]
    receiver: ReceiverKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReceiverKind {
    Sdk,
    Lean,
}

/// Devices per bench user where a scenario needs many connections (the spawned
/// server allows 64 per user).
const DEVICES_PER_USER: usize = 50;

/// A `courier serve` this run started on a temporary data directory.
struct Spawned {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    courier: std::path::PathBuf,
    admin_token: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Spawned {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            let status = child.wait()?;
            if !status.success() {
                bail!("the server exited with {status}");
            }
        }
        Ok(())
    }

    /// Starts the server on the data directory; returns its listening line.
    fn start(&mut self) -> anyhow::Result<Value> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(&self.courier)
            .args([
                "serve",
                "--tcp",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(self.dir.path())
            // Bench accounts are made by the thousand: cheap hashing, room for devices.
            .env("COURIER_PASSWORD_MEMORY_KIB", "64")
            .env("COURIER_PASSWORD_ITERATIONS", "1")
            .env("COURIER_MAX_DEVICES_PER_USER", "64")
            .env("COURIER_MAX_GROUP_MEMBERS", "100000")
            // quic-scale holds 100,000 connections; presence-storm pushes for 5,000 friends.
            .env("COURIER_MAX_CONNECTIONS", "250000")
            .env("COURIER_PRESENCE_PUSH_MAX_FRIENDS", "100000")
            // A load generator is one client address doing what thousands of users
            // do: rate limits off, and group members added without invitations.
            .env("COURIER_RATE_LIMITS", "off")
            .env("COURIER_GROUP_ADD_POLICY", "anyone")
            .env("COURIER_ADMIN_TOKEN", &self.admin_token)
            .env("COURIER_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        self.child = Some(child);
        serde_json::from_str(&line).context("the server's listening line")
    }
}

/// A server this run started: where it listens and how to reach it.
struct SpawnedServer {
    process: Spawned,
    tcp: String,
    http: String,
    quic: Option<String>,
    cert_sha256: Option<String>,
    pid: u32,
    admin_token: String,
}

fn spawn_server() -> anyhow::Result<SpawnedServer> {
    let exe = std::env::current_exe()?;
    let courier = exe.with_file_name("courier");
    if !courier.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p courier-gateway`",
            courier.display()
        );
    }
    let dir = tempfile::tempdir()?;
    // Unguessable enough for a temporary server on loopback: pid, time and an address.
    let admin_token = format!(
        "bench-{:x}-{:x}-{:p}",
        std::process::id(),
        courier_sdk_now(),
        &dir
    );
    let mut process = Spawned {
        child: None,
        dir,
        courier,
        admin_token: admin_token.clone(),
    };
    let v = process.start()?;
    let pid = process.pid();
    Ok(SpawnedServer {
        process,
        tcp: v["tcp"].as_str().context("tcp")?.to_owned(),
        http: v["http"].as_str().context("http")?.to_owned(),
        quic: v["quic"].as_str().map(str::to_owned),
        cert_sha256: v["cert_sha256"].as_str().map(str::to_owned),
        pid,
        admin_token,
    })
}

/// RSS in KiB and CPU seconds (user + system) of a process.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss, ticks / 100.0))
}

impl Bench {
    /// RSS (KiB) and CPU seconds of the server processes, summed.
    /// (Each process's figures are kept, for [`with_server`]'s per-node split.)
    fn server_stats(&self) -> Option<(u64, f64)> {
        if self.pids.is_empty() {
            return None;
        }
        let by_node: Vec<(u64, f64)> = self
            .pids
            .iter()
            .map(|&pid| proc_stats(pid))
            .collect::<Option<_>>()?;
        let sum = by_node
            .iter()
            .fold((0, 0.0), |(rss, cpu), (r, c)| (rss + r, cpu + c));
        *self.stats_by_node.lock().expect("not poisoned") = by_node;
        Some(sum)
    }
}

fn self_cpu() -> f64 {
    proc_stats(std::process::id()).map_or(0.0, |(_, cpu)| cpu)
}

async fn accounts(http: &HttpClient, prefix: &str, n: usize) -> anyhow::Result<Vec<LoginInfo>> {
    let run = format!(
        "{prefix}{:x}",
        std::process::id() ^ (courier_sdk_now() as u32)
    );
    let logins: Vec<anyhow::Result<LoginInfo>> = stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let name = format!("{run}-{i}");
            async move {
                retrying(|| http.register(&name, "bench-password")).await?;
                Ok(retrying(|| http.login(&name, "bench-password")).await?)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    logins.into_iter().collect()
}

/// Runs `request` again while the server sheds it as overloaded (its password gate
/// under a setup burst), as a client would; other errors and the tenth refusal end it.
async fn retrying<T, F, Fut>(mut request: F) -> Result<T, courier_sdk::SdkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, courier_sdk::SdkError>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(e) if e.is_retryable() && attempt < 9 => {
                attempt += 1;
                let wait = e
                    .retry_after()
                    .unwrap_or(std::time::Duration::from_millis(100 * attempt));
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

fn courier_sdk_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn options(device: String) -> ClientOptions {
    ClientOptions {
        device_id: device,
        event_buffer: 65_536,
        ..ClientOptions::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Bench {
    args: Args,
    tcp: String,
    dialer: Dialer,
    http: HttpClient,
    /// The HTTP client with the admin token (operator routes).
    admin: HttpClient,
    quic: Option<String>,
    cert_sha256: Option<String>,
    pid: Option<u32>,
    /// Every server process measured (several nodes: their sums).
    pids: Vec<u32>,
    /// Each process's RSS and CPU when `server_stats` last read them.
    stats_by_node: std::sync::Mutex<Vec<(u64, f64)>>,
    /// The server this run started, if it did (`fill` restarts it).
    spawned: Option<std::sync::Mutex<Spawned>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::ReconnectWorker = args.scenario {
        return reconnect_storm::worker(args.server).await;
    }
    // Where the server is: one this run starts, or the one the flags name.
    let (spawned, tcp, http, quic, cert_sha256, pid, admin_token) = if args.spawn_server {
        let s = spawn_server()?;
        (
            Some(s.process),
            s.tcp,
            s.http,
            s.quic,
            s.cert_sha256,
            Some(s.pid),
            s.admin_token,
        )
    } else {
        let a = &args;
        let (quic, cert) = (Some(a.quic.clone()), a.cert_sha256.clone());
        (
            None,
            a.server.clone(),
            a.http.clone(),
            quic,
            cert,
            a.server_pid.first().copied(),
            a.admin_token.clone(),
        )
    };
    let ctx = Bench {
        http: HttpClient::new(&http),
        admin: HttpClient::new(&http).with_token(&admin_token),
        dialer: Dialer::new(
            args.transport,
            &tcp,
            &http,
            quic.as_deref(),
            cert_sha256.as_deref(),
        )?,
        tcp,
        quic,
        cert_sha256,
        pids: match args.server_pid.len() {
            0 => pid.into_iter().collect(),
            _ => args.server_pid.clone(),
        },
        pid,
        stats_by_node: Default::default(),
        spawned: spawned.map(std::sync::Mutex::new),
        args,
    };
    let limit = Duration::from_secs(ctx.args.timeout_secs);
    let line = match tokio::time::timeout(limit, run(&ctx)).await {
        Ok(line) => line?,
        Err(_) => bail!("gave up after {} s", ctx.args.timeout_secs),
    };
    println!("{}", with_cost_per_unit(line));
    Ok(())
}

/// Adds the CPU each side spent per unit of work: per delivery where a line counts
/// deliveries (fan-out), else per message, else per connection. A load generator
/// whose own cost per unit is near the server's is measuring itself, not the server.
fn with_cost_per_unit(mut line: Value) -> Value {
    let unit = ["deliveries", "messages", "connections"]
        .into_iter()
        .find_map(|key| line[key].as_f64().filter(|n| *n > 0.0).map(|n| (key, n)));
    let Some((unit, n)) = unit else {
        return line;
    };
    let name = match unit {
        "deliveries" => "delivery",
        "messages" => "msg",
        _ => "conn",
    };
    for side in ["server", "client"] {
        if let Some(cpu) = line[format!("{side}_cpu_s")].as_f64() {
            let us = (cpu * 1e6 / n * 100.0).round() / 100.0;
            line[format!("{side}_cpu_us_per_{name}")] = json!(us);
        }
    }
    if let Some(nodes) = line["server_cpu_s_by_node"].as_array() {
        let us: Vec<f64> = nodes
            .iter()
            .filter_map(Value::as_f64)
            .map(|cpu| (cpu * 1e6 / n * 100.0).round() / 100.0)
            .collect();
        line[format!("server_cpu_us_per_{name}_by_node")] = json!(us);
    }
    line
}

async fn run(ctx: &Bench) -> anyhow::Result<Value> {
    match ctx.args.scenario {
        Scenario::Idle => idle(ctx).await,
        Scenario::Pair => {
            pair(
                ctx,
                "pair",
                ctx.args.n.unwrap_or(1000),
                ctx.args.messages.unwrap_or(100),
                ctx.args.in_flight.unwrap_or(10),
            )
            .await
        }
        Scenario::PairLight => {
            pair(
                ctx,
                "pair-light",
                ctx.args.n.unwrap_or(10),
                ctx.args.messages.unwrap_or(200),
                ctx.args.in_flight.unwrap_or(1),
            )
            .await
        }
        Scenario::Group => group(ctx).await,
        Scenario::History => history(ctx).await,
        Scenario::PresenceStorm => presence_storm::run(ctx).await,
        Scenario::ReconnectStorm => reconnect_storm::run(ctx).await,
        Scenario::QuicScale => quic_scale::run(ctx).await,
        Scenario::Fill => fill::run(ctx).await,
        Scenario::ReconnectWorker => bail!("reconnect-worker runs under reconnect-storm"),
    }
}

fn with_server(ctx: &Bench, mut line: Value, before: Option<(u64, f64)>) -> Value {
    if let Some((rss0, cpu0)) = before {
        let nodes_before = ctx.stats_by_node.lock().expect("not poisoned").clone();
        if let Some((rss, cpu)) = ctx.server_stats() {
            line["server_rss_kib"] = json!(rss);
            line["server_rss_growth_kib"] = json!(rss as i64 - rss0 as i64);
            line["server_cpu_s"] = json!(((cpu - cpu0) * 100.0).round() / 100.0);
            // Several nodes: each one's share as well.
            let nodes_after = ctx.stats_by_node.lock().expect("not poisoned").clone();
            if nodes_after.len() > 1 && nodes_before.len() == nodes_after.len() {
                let cpu: Vec<f64> = nodes_before
                    .iter()
                    .zip(&nodes_after)
                    .map(|((_, c0), (_, c1))| ((c1 - c0) * 100.0).round() / 100.0)
                    .collect();
                line["server_cpu_s_by_node"] = json!(cpu);
                let rss: Vec<u64> = nodes_after.iter().map(|(r, _)| *r).collect();
                line["server_rss_kib_by_node"] = json!(rss);
            }
        }
    }
    line
}

async fn idle(ctx: &Bench) -> anyhow::Result<Value> {
    let n = ctx.args.n.unwrap_or(10_000);
    let per_user = DEVICES_PER_USER;
    let users = accounts(&ctx.http, "idle", n.div_ceil(per_user)).await?;
    let before = ctx.server_stats();
    let started = Instant::now();
    let conns: Vec<anyhow::Result<(Client, courier_sdk::Events)>> = stream::iter(0..n)
        .map(|i| {
            let token = &users[i / per_user].token;
            ctx.dialer.connect(i, token, options(format!("idle-{i}")))
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let connected: Vec<_> = conns.into_iter().collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(ctx.args.hold_secs)).await;
    let mut line = json!({
        "scenario": "idle", "transport": ctx.args.transport.name(), "connections": connected.len(),
        "duration_s": elapsed, "conns_per_s": connected.len() as f64 / elapsed,
    });
    line = with_server(ctx, line, before);
    if let Some(growth) = line["server_rss_growth_kib"].as_i64() {
        line["kib_per_conn"] = json!(growth as f64 / connected.len() as f64);
    }
    line["client_cpu_s"] = json!(self_cpu());
    drop(connected);
    Ok(line)
}

/// Senders send `messages` each to their partner, `in_flight` at a time, every
/// message acknowledged (durable); receivers check order and count.
async fn pair(
    ctx: &Bench,
    name: &str,
    pairs: usize,
    messages: usize,
    in_flight: usize,
) -> anyhow::Result<Value> {
    let users = accounts(&ctx.http, "pair", pairs * 2).await?;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..pairs {
        let (a, b) = (&users[2 * p], &users[2 * p + 1]);
        let (sender, sender_events) = ctx
            .dialer
            .connect(2 * p, &a.token, options(format!("s{p}")))
            .await?;
        drop(sender_events);
        let (_receiver, events) = ctx
            .dialer
            .connect(2 * p + 1, &b.token, options(format!("r{p}")))
            .await?;
        let c = ConversationId::direct(a.user_id, b.user_id).context("distinct users")?;
        senders.push((sender, c));
        receivers.push((_receiver, events, a.user_id));
    }
    let before = ctx.server_stats();
    let cpu0 = self_cpu();
    let lost = Arc::new(AtomicU64::new(0));
    let duplicated = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut receive_tasks = Vec::new();
    for (client, mut events, from) in receivers {
        let (lost, duplicated) = (lost.clone(), duplicated.clone());
        receive_tasks.push(tokio::spawn(async move {
            let _keep = client;
            let mut latencies = Vec::with_capacity(messages);
            let mut last = 0u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while latencies.len() < messages {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(Some(Event::Message(m))) if m.sender == from => {
                        if m.seq <= last {
                            duplicated.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        last = m.seq;
                        let sent_ms = m
                            .body
                            .as_ref()
                            .and_then(|b| b.as_text())
                            .and_then(send_stamp)
                            .unwrap_or(0);
                        latencies
                            .push(courier_sdk_now_us().saturating_sub(sent_ms) as f64 / 1000.0);
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            lost.fetch_add((messages - latencies.len()) as u64, Ordering::Relaxed);
            latencies
        }));
    }
    let padding = "x".repeat(80);
    let mut send_tasks = Vec::new();
    for (client, c) in senders {
        let padding = padding.clone();
        send_tasks.push(tokio::spawn(send_paced(
            client, c, messages, in_flight, padding,
        )));
    }
    for t in send_tasks {
        t.await??;
    }
    let mut latencies = Vec::new();
    for t in receive_tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let delivered = latencies.len();
    let line = json!({
        "scenario": name, "transport": ctx.args.transport.name(), "connections": pairs * 2, "messages": pairs * messages,
        "duration_s": elapsed, "msgs_per_s": delivered as f64 / elapsed,
        "delivered": delivered, "lost": lost.load(Ordering::Relaxed), "duplicated": duplicated.load(Ordering::Relaxed),
        "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(0.0),
        "client_cpu_s": ((self_cpu() - cpu0) * 100.0).round() / 100.0,
    });
    Ok(with_server(ctx, line, before))
}

/// Sends `messages` texts `"<send time µs> <tail>"`, `in_flight` awaiting their
/// durable ack at a time (the receivers read the send time for latency).
async fn send_paced(
    client: Client,
    c: ConversationId,
    messages: usize,
    in_flight: usize,
    tail: String,
) -> anyhow::Result<()> {
    let mut pending = stream::FuturesOrdered::new();
    for _ in 0..messages {
        let body = pb::MessageBody::text(format!("{} {tail}", courier_sdk_now_us()));
        pending.push_back(
            client
                .submit_send(&c, body, courier_sdk::new_client_msg_id())
                .await?,
        );
        if pending.len() >= in_flight {
            pending.next().await.context("an ack")??;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// The send time (µs) a scenario's text starts with: `"<send time µs> <tail>"`.
fn send_stamp(text: &str) -> Option<u64> {
    text.split(' ').next()?.parse().ok()
}

fn courier_sdk_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn group(ctx: &Bench) -> anyhow::Result<Value> {
    let members = ctx.args.n.unwrap_or(1000);
    let messages = ctx.args.messages.unwrap_or(100);
    let in_flight = ctx.args.in_flight.unwrap_or(5);
    let senders_n = 10.min(members);
    let users = accounts(&ctx.http, "grp", members).await?;
    let owner = ctx.http.clone().with_token(&users[0].token);
    let group = owner
        .create_group(&NewGroup {
            name: "bench".into(),
            members: users[1..].iter().map(|u| u.user_id).collect(),
            ..NewGroup::default()
        })
        .await?;
    let c = ConversationId::Group(group.group_id);
    // Senders use the SDK; the other members receive on the lean path unless asked
    // otherwise (or over QUIC, which only the SDK speaks here).
    let lean = ctx.args.receiver == ReceiverKind::Lean && ctx.args.transport != Transport::Quic;
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let device = format!("g{i}");
        clients.push(if i >= senders_n && lean {
            Receiver::Lean(
                lean::LeanReceiver::connect(
                    ctx.dialer.tcp_addr(i),
                    ctx.dialer.is_ws(),
                    &u.token,
                    device,
                )
                .await?,
                u.user_id,
            )
        } else {
            let (client, events) = ctx.dialer.connect(i, &u.token, options(device)).await?;
            Receiver::Sdk(client, events)
        });
    }
    let before = ctx.server_stats();
    let cpu0 = self_cpu();
    let total = senders_n * messages;
    let received = Arc::new(AtomicU64::new(0));
    let duplicated = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut receive_tasks = Vec::new();
    let mut senders = Vec::new();
    for (i, receiver) in clients.into_iter().enumerate() {
        let (received, duplicated) = (received.clone(), duplicated.clone());
        let expected = if i < senders_n {
            total - messages
        } else {
            total
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        match receiver {
            Receiver::Sdk(client, mut events) => {
                if i < senders_n {
                    senders.push(client.clone());
                }
                let me = client.user_id();
                receive_tasks.push(tokio::spawn(async move {
                    let _keep = client;
                    let mut tally = Tally::new(expected, received, duplicated);
                    while !tally.done() {
                        match tokio::time::timeout_at(deadline, events.next()).await {
                            Ok(Some(Event::Message(m))) if m.sender != me => {
                                let stamp = m
                                    .body
                                    .as_ref()
                                    .and_then(|b| b.as_text())
                                    .and_then(send_stamp);
                                tally.saw(m.seq, stamp);
                            }
                            Ok(Some(_)) => {}
                            _ => break,
                        }
                    }
                    tally.finish()
                }));
            }
            Receiver::Lean(mut lean, me) => {
                receive_tasks.push(tokio::spawn(async move {
                    let mut tally = Tally::new(expected, received, duplicated);
                    while !tally.done() {
                        match tokio::time::timeout_at(deadline, lean.next()).await {
                            Ok(Ok(Some(d))) if d.sender != me => tally.saw(d.seq, d.stamp),
                            Ok(Ok(Some(_))) => {}
                            _ => break,
                        }
                    }
                    tally.finish()
                }));
            }
        }
    }
    let mut send_tasks = Vec::new();
    for client in senders {
        send_tasks.push(tokio::spawn(send_paced(
            client,
            c,
            messages,
            in_flight,
            "group".to_owned(),
        )));
    }
    for t in send_tasks {
        t.await??;
    }
    let mut lost = 0;
    let mut latencies = Vec::new();
    for t in receive_tasks {
        let (missing, l) = t.await?;
        lost += missing;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let deliveries = received.load(Ordering::Relaxed);
    let line = json!({
        "scenario": "group", "transport": ctx.args.transport.name(), "connections": members, "messages": total,
        "duration_s": elapsed, "deliveries_per_s": deliveries as f64 / elapsed, "deliveries": deliveries,
        "lost": lost, "duplicated": duplicated.load(Ordering::Relaxed),
        "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or(0.0),
        "client_cpu_s": ((self_cpu() - cpu0) * 100.0).round() / 100.0,
    });
    Ok(with_server(ctx, line, before))
}

/// A member's connection in `group`: the SDK's, or the lean receiving path.
enum Receiver {
    Sdk(Client, courier_sdk::Events),
    Lean(lean::LeanReceiver, u64),
}

/// One receiver's count of the bench's text messages: in seq order, each once.
struct Tally {
    expected: usize,
    got: usize,
    last: u64,
    latencies: Vec<f64>,
    received: Arc<AtomicU64>,
    duplicated: Arc<AtomicU64>,
}

impl Tally {
    fn new(expected: usize, received: Arc<AtomicU64>, duplicated: Arc<AtomicU64>) -> Self {
        Self {
            expected,
            got: 0,
            last: 0,
            latencies: Vec::new(),
            received,
            duplicated,
        }
    }

    fn done(&self) -> bool {
        self.got >= self.expected
    }

    /// A message with `seq`; `stamp` is its send time in µs (only the bench's
    /// texts carry one; system events do not count).
    fn saw(&mut self, seq: u64, stamp: Option<u64>) {
        let Some(sent) = stamp else {
            return;
        };
        if seq <= self.last {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.last = seq;
        self.got += 1;
        self.received.fetch_add(1, Ordering::Relaxed);
        if self.latencies.len() < 200 {
            self.latencies
                .push(courier_sdk_now_us().saturating_sub(sent) as f64 / 1000.0);
        }
    }

    /// What did not arrive, and the latencies sampled.
    fn finish(self) -> (usize, Vec<f64>) {
        (self.expected - self.got, self.latencies)
    }
}

async fn history(ctx: &Bench) -> anyhow::Result<Value> {
    let total = ctx.args.messages.unwrap_or(100_000);
    let users = accounts(&ctx.http, "hist", 2).await?;
    let (client, events) =
        Client::connect(ctx.tcp.as_str(), &users[0].token, options("h".into())).await?;
    drop(events);
    let c = ConversationId::direct(users[0].user_id, users[1].user_id).context("distinct")?;
    let mut pending = stream::FuturesUnordered::new();
    for i in 0..total {
        pending.push(
            client
                .submit_send(
                    &c,
                    pb::MessageBody::text(format!("history {i}")),
                    courier_sdk::new_client_msg_id(),
                )
                .await?,
        );
        if pending.len() >= 256 {
            pending.next().await.context("an ack")??;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let reader = ctx.http.clone().with_token(&users[1].token);
    let mut results = Vec::new();
    for page in [20usize, 100] {
        let mut cursor = 0u64;
        let mut times = Vec::new();
        let started = Instant::now();
        loop {
            let t0 = Instant::now();
            let p = reader
                .history(
                    &c,
                    courier_sdk::HistoryQuery {
                        after: Some(cursor),
                        limit: Some(page),
                        ..Default::default()
                    },
                )
                .await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            let Some(last) = p.messages.last() else { break };
            cursor = last.seq;
            if !p.has_more {
                break;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        times.sort_by(|a, b| a.total_cmp(b));
        results.push(json!({
            "page": page, "pages": times.len(), "pages_per_s": times.len() as f64 / elapsed,
            "p50_ms": percentile(&times, 0.5), "p99_ms": percentile(&times, 0.99), "last_seq": cursor,
        }));
    }
    Ok(json!({"scenario": "history", "transport": "http", "messages": total, "pages": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_unit_prefers_deliveries_then_messages() {
        let line = with_cost_per_unit(json!({
            "messages": 100, "deliveries": 1000, "server_cpu_s": 0.5, "client_cpu_s": 1.0
        }));
        assert_eq!(line["server_cpu_us_per_delivery"], 500.0);
        assert_eq!(line["client_cpu_us_per_delivery"], 1000.0);
        let line = with_cost_per_unit(json!({"messages": 1000, "server_cpu_s": 0.01}));
        assert_eq!(line["server_cpu_us_per_msg"], 10.0);
        assert!(line.get("client_cpu_us_per_msg").is_none());
        let line = with_cost_per_unit(json!({
            "messages": 1000, "server_cpu_s": 0.03, "server_cpu_s_by_node": [0.01, 0.02, 0.0]
        }));
        assert_eq!(
            line["server_cpu_us_per_msg_by_node"],
            json!([10.0, 20.0, 0.0])
        );
    }
}
