//! `reconnect-storm`: N resilient SDK sessions (default 10,000) lose the network at
//! once, miss `messages` messages each while it is down, then reconnect with the
//! SDK's backoff and jitter and resync from their cursors. The figure is the time
//! from the network's return until every session has handed its application all
//! missed messages, with failures and duplicates counted.
//!
//! Each session runs behind a [`DropProxy`] in the same process, which costs three
//! descriptors per session; sessions are therefore spread over worker processes (this
//! same binary, `reconnect-worker`) of at most [`CLIENTS_PER_WORKER`] each, driven
//! over their stdin and stdout one JSON line at a time.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use courier_sdk::{pb, Client, Connector, ConversationId, Session, SessionEvent, SessionOptions};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::proxy::DropProxy;
use crate::{accounts, options, percentile, with_server, Bench, DEVICES_PER_USER};

/// Sessions per worker process: three descriptors each stays under the 20,000 cap.
pub const CLIENTS_PER_WORKER: usize = 5_000;
/// How long the workers wait for every session to resync.
const RESYNC_LIMIT: Duration = Duration::from_secs(60);

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(server: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["reconnect-worker", "--server", server])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn say(&mut self, line: &Value) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn hear(&mut self) -> anyhow::Result<Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("a worker ended early")?;
        Ok(serde_json::from_str(&line)?)
    }
}

/// The coordinating side: sets up users, starts workers, cuts, sends, reopens.
pub async fn run(ctx: &Bench) -> anyhow::Result<Value> {
    let n = ctx.args.n.unwrap_or(10_000);
    let missed = ctx.args.messages.unwrap_or(10);
    let users = accounts(&ctx.http, "storm", n.div_ceil(DEVICES_PER_USER)).await?;
    let sender = accounts(&ctx.http, "storm-from", 1).await?.remove(0);
    let clients: Vec<Value> = (0..n)
        .map(|i| json!([users[i / DEVICES_PER_USER].token, format!("storm-{i}")]))
        .collect();

    let mut workers = Vec::new();
    for chunk in clients.chunks(CLIENTS_PER_WORKER) {
        let mut w = Worker::spawn(&ctx.tcp)?;
        w.say(&json!({"from": sender.user_id, "messages": missed, "clients": chunk}))
            .await?;
        workers.push(w);
    }
    let mut connect_s: f64 = 0.0;
    for w in &mut workers {
        let ready = w.hear().await?;
        connect_s = connect_s.max(ready["connect_s"].as_f64().unwrap_or(0.0));
    }
    let before = ctx.server_stats();

    for w in &mut workers {
        w.say(&json!("cut")).await?;
    }
    for w in &mut workers {
        w.hear().await?;
    }
    // While the network is down, each user gets `missed` messages.
    let (client, events) = Client::connect(
        ctx.tcp.as_str(),
        &sender.token,
        options("storm-sender".into()),
    )
    .await?;
    drop(events);
    let mut acks = stream::FuturesUnordered::new();
    for u in &users {
        let c = ConversationId::direct(sender.user_id, u.user_id).context("distinct users")?;
        for i in 0..missed {
            let body = pb::MessageBody::text(format!("missed {i}"));
            acks.push(
                client
                    .submit_send(&c, body, courier_sdk::new_client_msg_id())
                    .await?,
            );
            if acks.len() >= 256 {
                acks.next().await.context("an ack")??;
            }
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }

    for w in &mut workers {
        w.say(&json!("reopen")).await?;
    }
    let (mut times, mut failures, mut duplicated) = (Vec::new(), 0u64, 0u64);
    for w in &mut workers {
        let r = w.hear().await?;
        failures += r["failures"].as_u64().unwrap_or(0);
        duplicated += r["duplicated"].as_u64().unwrap_or(0);
        times.extend(
            r["times_s"]
                .as_array()
                .context("times")?
                .iter()
                .filter_map(Value::as_f64),
        );
        let _ = w.child.wait().await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let line = json!({
        "scenario": "reconnect-storm", "transport": "tcp", "connections": n,
        "worker_processes": workers.len(), "messages": users.len() * missed,
        "missed_per_client": missed, "connect_s": connect_s,
        "duration_s": times.last().copied().unwrap_or(0.0),
        "resynced": times.len(), "failures": failures, "lost": failures, "duplicated": duplicated,
        "p50_ms": percentile(&times, 0.5) * 1000.0, "p99_ms": percentile(&times, 0.99) * 1000.0,
        "max_ms": times.last().copied().unwrap_or(0.0) * 1000.0,
    });
    Ok(with_server(ctx, line, before))
}

/// What one session saw after the network came back.
#[derive(Default)]
struct Outcome {
    done_after: Option<Duration>,
    duplicated: u64,
}

/// The worker side (`courier-bench reconnect-worker`): reads its clients, runs them
/// behind its proxy, and answers each command with one JSON line.
pub async fn worker(server: String) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let config: Value = serde_json::from_str(&lines.next_line().await?.context("config")?)?;
    let from = config["from"].as_u64().context("from")?;
    let missed = config["messages"].as_u64().context("messages")? as usize;
    let clients: Vec<(String, String)> = config["clients"]
        .as_array()
        .context("clients")?
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap_or("").to_owned(),
                c[1].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let proxy = DropProxy::start(server).await?;
    let via = proxy.addr().to_string();

    let started = Instant::now();
    let sessions: Vec<anyhow::Result<_>> = stream::iter(clients)
        .map(|(token, device)| {
            let via = via.clone();
            async move {
                let opts = SessionOptions {
                    client: options(device),
                    ..SessionOptions::default()
                };
                Ok(Session::start_with(Connector::Tcp(via), &token, opts).await?)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let sessions: Vec<_> = sessions.into_iter().collect::<anyhow::Result<_>>()?;
    let connect_s = started.elapsed().as_secs_f64();

    let reopened: Arc<OnceLock<Instant>> = Arc::default();
    let remaining = Arc::new(AtomicU64::new(sessions.len() as u64));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let mut watchers = Vec::new();
    for (session, mut events) in sessions {
        let (reopened, remaining, all_done) =
            (reopened.clone(), remaining.clone(), all_done.clone());
        watchers.push(tokio::spawn(async move {
            let _keep = session;
            let mut outcome = Outcome::default();
            let (mut got, mut last) = (0usize, 0u64);
            while got < missed {
                match events.next().await {
                    Some(SessionEvent::Message(m)) if m.sender == from => {
                        if m.seq <= last {
                            outcome.duplicated += 1;
                            continue;
                        }
                        last = m.seq;
                        got += 1;
                    }
                    Some(SessionEvent::Ended(_)) | None => break,
                    Some(_) => {}
                }
            }
            if got == missed {
                outcome.done_after = reopened.get().map(Instant::elapsed);
            }
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_one();
            }
            // Anything more from the sender would be a duplicate: look briefly.
            if let Ok(Some(SessionEvent::Message(m))) =
                tokio::time::timeout(Duration::from_millis(200), events.next()).await
            {
                if m.sender == from {
                    outcome.duplicated += 1;
                }
            }
            outcome
        }));
    }
    say(&json!({"ready": watchers.len(), "connect_s": connect_s}));

    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Value>(&line)?.as_str() {
            Some("cut") => {
                proxy.cut();
                say(&json!({"cut": true}));
            }
            Some("reopen") => {
                let _ = reopened.set(Instant::now());
                proxy.reopen();
                let _ = tokio::time::timeout(RESYNC_LIMIT, all_done.notified()).await;
                break;
            }
            other => bail!("unknown command {other:?}"),
        }
    }
    // Finished watchers end within their duplicate look-out; the rest failed.
    let (mut times, mut failures, mut duplicated) = (Vec::new(), 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    for w in watchers {
        match tokio::time::timeout_at(deadline, w).await {
            Ok(Ok(outcome)) => {
                duplicated += outcome.duplicated;
                match outcome.done_after {
                    Some(d) => times.push(d.as_secs_f64()),
                    None => failures += 1,
                }
            }
            _ => failures += 1,
        }
    }
    say(&json!({"times_s": times, "failures": failures, "duplicated": duplicated}));
    Ok(())
}

fn say(line: &Value) {
    println!("{line}");
}
