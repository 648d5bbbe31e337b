//! `fill`: stores many messages (by default 10 million 100-byte texts over 1,000
//! direct conversations) as fast as the server acknowledges them, sampling the
//! server's RSS throughout; then reports the bytes on disk per stored message, the
//! RSS after `--hold-secs` idle, and, after a graceful stop, how long the server
//! takes from start to serving history again on the same data and the RSS it
//! starts with. Those last figures need `--spawn-server` (it restarts the server it
//! started); against a running server (`--server`, `--server-pid`) it stores the
//! messages and reports the rate and the RSS only (how a store is grown before a
//! measurement, `scripts/pair-on-a-full-store.sh`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use courier_sdk::{pb, ConversationId, HistoryQuery, HttpClient};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::{accounts, options, proc_stats, Bench};

/// Senders; each writes to `CONVERSATIONS / SENDERS` conversations in turn.
const SENDERS: usize = 100;
/// Acknowledgements each sender waits for at a time.
const IN_FLIGHT: usize = 64;

pub async fn run(ctx: &Bench) -> anyhow::Result<Value> {
    let Some(pid) = ctx.pid else {
        bail!("fill samples the server's memory: run it with --spawn-server or --server-pid");
    };
    let total = ctx.args.messages.unwrap_or(10_000_000);
    let conversations = ctx.args.n.unwrap_or(1000).max(SENDERS);
    let per_sender_convs = conversations / SENDERS;
    let users = accounts(&ctx.http, "fill", SENDERS + per_sender_convs).await?;
    let (senders, peers) = users.split_at(SENDERS);
    let data_dir = ctx
        .spawned
        .as_ref()
        .map(|s| s.lock().expect("server").data_dir().to_owned());
    let disk_before = data_dir.as_deref().map_or(0, dir_bytes);

    // RSS sampled every 200 ms while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, _)) = proc_stats(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let body = "x".repeat(100);
    let started = Instant::now();
    let per_sender = total.div_ceil(SENDERS);
    let results: Vec<anyhow::Result<usize>> = stream::iter(senders.iter().enumerate())
        .map(|(i, s)| {
            let body = body.clone();
            let convs: anyhow::Result<Vec<ConversationId>> = peers
                .iter()
                .map(|p| ConversationId::direct(s.user_id, p.user_id).context("distinct users"))
                .collect::<anyhow::Result<_>>();
            let count = per_sender.min(total.saturating_sub(i * per_sender));
            async move {
                let convs = convs?;
                let (client, _events) = ctx
                    .dialer
                    .connect(i, &s.token, options(format!("f{i}")))
                    .await?;
                let mut pending = stream::FuturesUnordered::new();
                for n in 0..count {
                    let c = &convs[n % convs.len()];
                    pending.push(
                        client
                            .submit_send(
                                c,
                                pb::MessageBody::text(body.clone()),
                                courier_sdk::new_client_msg_id(),
                            )
                            .await?,
                    );
                    if pending.len() >= IN_FLIGHT {
                        pending.next().await.context("an ack")??;
                    }
                }
                while let Some(ack) = pending.next().await {
                    ack?;
                }
                Ok(count)
            }
        })
        .buffer_unordered(SENDERS)
        .collect()
        .await;
    let stored: usize = results.into_iter().sum::<anyhow::Result<usize>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.await?;
    let rss_after_load = proc_stats(pid).map_or(0, |s| s.0);
    let hold = ctx.args.hold_secs;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let rss_after_hold = proc_stats(pid).map_or(0, |s| s.0);
    let mut line = json!({
        "scenario": "fill", "messages": stored, "conversations": SENDERS * per_sender_convs,
        "body_bytes": body.len(), "duration_s": elapsed, "msgs_per_s": stored as f64 / elapsed,
        "server_rss_peak_kib": peak.load(Ordering::Relaxed),
        "server_rss_after_load_kib": rss_after_load,
        "hold_s": hold, "server_rss_after_hold_kib": rss_after_hold,
    });
    let (Some(server), Some(data_dir)) = (&ctx.spawned, data_dir) else {
        return Ok(line);
    };
    let disk = dir_bytes(&data_dir).saturating_sub(disk_before);

    // A graceful stop, then a start on the same data: until history is served.
    server.lock().expect("server").stop()?;
    let restart = Instant::now();
    let (listening, new_pid) = {
        let mut server = server.lock().expect("server");
        let listening = server.start()?;
        (listening, server.pid())
    };
    let http_url = listening["http"].as_str().context("http")?;
    let http = HttpClient::new(http_url).with_token(&senders[0].token);
    let c = ConversationId::direct(senders[0].user_id, peers[0].user_id).context("distinct")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let page = http
            .history(
                &c,
                HistoryQuery {
                    limit: Some(20),
                    ..HistoryQuery::default()
                },
            )
            .await;
        if page.is_ok_and(|p| !p.messages.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the restarted server did not serve history within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_s = restart.elapsed().as_secs_f64();
    let rss_fresh = proc_stats(new_pid).map_or(0, |s| s.0);

    let extra = json!({
        "disk_bytes": disk, "disk_bytes_per_msg": (disk as f64 / stored.max(1) as f64).round(),
        "restart_to_serving_s": restart_s, "server_rss_fresh_start_kib": rss_fresh,
    });
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    Ok(line)
}

/// Bytes allocated to every file under `dir` (what the store takes on disk).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            // Allocated blocks, not the apparent length: what the disk holds.
            _ => e
                .metadata()
                .map_or(0, |m| std::os::unix::fs::MetadataExt::blocks(&m) * 512),
        })
        .sum()
}
