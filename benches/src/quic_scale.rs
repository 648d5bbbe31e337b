//! `quic-scale`: `idle` over QUIC, in steps that rise past the TCP descriptor cap
//! (default 25,000, 50,000 and 100,000 authenticated connections in one server
//! process). QUIC needs no descriptor per connection on either side: the clients
//! share a few UDP endpoints. Reports the connect rate and the server's memory per
//! connection at each step.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use courier_sdk::{QuicConnector, Trust};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::{accounts, options, proc_stats, self_cpu, with_server, Bench, DEVICES_PER_USER};

/// Client connections per UDP endpoint.
const CONNECTIONS_PER_ENDPOINT: usize = 10_000;
/// Handshakes in flight at once.
const CONNECTING: usize = 128;

pub async fn run(ctx: &Bench) -> anyhow::Result<Value> {
    let steps = ctx.args.steps.clone();
    let top = steps.iter().copied().max().unwrap_or(0);
    let quic: SocketAddr = ctx
        .quic
        .as_deref()
        .context("the server's QUIC address (--quic)")?
        .parse()?;
    let pin = ctx
        .cert_sha256
        .clone()
        .context("the server's certificate fingerprint (--cert-sha256)")?;
    let users = accounts(&ctx.http, "quic", top.div_ceil(DEVICES_PER_USER)).await?;
    let endpoints = (0..top.div_ceil(CONNECTIONS_PER_ENDPOINT))
        .map(|_| {
            QuicConnector::new(
                &Trust::Pinned(pin.clone()),
                "localhost",
                Duration::from_secs(20),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let before = ctx.server_stats();
    let cpu0 = self_cpu();
    let mut held = Vec::with_capacity(top);
    let mut results = Vec::new();
    let started = Instant::now();
    for &target in &steps {
        let from = held.len();
        let step_started = Instant::now();
        let conns: Vec<anyhow::Result<_>> = stream::iter(from..target)
            .map(|i| {
                let endpoint = endpoints[i / CONNECTIONS_PER_ENDPOINT].clone();
                let token = users[i / DEVICES_PER_USER].token.clone();
                async move {
                    Ok(endpoint
                        .connect(quic, &token, options(format!("quic-{i}")))
                        .await?)
                }
            })
            .buffer_unordered(CONNECTING)
            .collect()
            .await;
        let step_s = step_started.elapsed().as_secs_f64();
        let (mut failed, mut first_error) = (0, None);
        for c in conns {
            match c {
                Ok(c) => held.push(c),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        let mut step = json!({
            "connections": held.len(), "failed": failed, "first_error": first_error,
            "conns_per_s": (target - from) as f64 / step_s,
        });
        if let (Some(pid), Some((rss0, _))) = (ctx.pid, before) {
            if let Some((rss, _)) = proc_stats(pid) {
                step["server_rss_kib"] = json!(rss);
                step["kib_per_conn"] = json!((rss as f64 - rss0 as f64) / held.len().max(1) as f64);
            }
        }
        results.push(step);
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(ctx.args.hold_secs)).await;
    let zero_rtt: u64 = endpoints.iter().map(|e| e.zero_rtt_connections()).sum();
    let last = results.last().cloned().unwrap_or(Value::Null);
    let line = json!({
        "scenario": "quic-scale", "transport": "quic", "connections": held.len(),
        "duration_s": elapsed, "conns_per_s": held.len() as f64 / elapsed,
        "kib_per_conn": last["kib_per_conn"],
        "zero_rtt_connections": zero_rtt, "steps": results,
        "client_cpu_s": ((self_cpu() - cpu0) * 100.0).round() / 100.0,
    });
    drop(held);
    Ok(with_server(ctx, line, before))
}
