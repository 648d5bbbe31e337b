//! `presence-storm`: a user with N friends (default 5,000; a fifth of them online)
//! flaps: its only device drops and returns 10 times in 2 s. Without edge
//! detection, debouncing and coalescing every change would be one frame to every
//! online friend; the line reports what the server took in, what it sent, what the
//! friends received, and the reduction factor against that naive count.
//!
//! Friendships are made through the real API (request, then accept as the friend).
//! A server's `presence_push_max_friends` makes users with more friends pull-only;
//! `--spawn-server` raises it past N so the push path is what gets measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use courier_sdk::{Client, Event, LoginInfo};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::{accounts, options, with_server, Bench};

/// Drop-and-return cycles of the flapping device.
const FLAPS: usize = 10;
/// Over this long.
const STORM: Duration = Duration::from_secs(2);

pub async fn run(ctx: &Bench) -> anyhow::Result<Value> {
    let friends_n = ctx.args.n.unwrap_or(5_000);
    let online_n = ctx.args.online.unwrap_or(friends_n / 5).min(friends_n);
    let star = accounts(&ctx.http, "star", 1).await?.remove(0);
    let friends = accounts(&ctx.http, "fan", friends_n).await?;
    befriend_all(ctx, &star, &friends).await?;

    // The online friends, each counting the presence frames it receives.
    let frames_seen = Arc::new(AtomicU64::new(0));
    let mut online = Vec::new();
    for (i, f) in friends.iter().take(online_n).enumerate() {
        let (client, mut events) =
            Client::connect(ctx.tcp.as_str(), &f.token, options(format!("fan-{i}"))).await?;
        let seen = frames_seen.clone();
        let task = tokio::spawn(async move {
            while let Some(e) = events.next().await {
                if let Event::Presence(_) = e {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        online.push((client, task));
    }
    // The star comes online for good before the storm, so its friends know it is.
    let (star_client, star_events) =
        Client::connect(ctx.tcp.as_str(), &star.token, options("star".into())).await?;
    drop(star_events);
    let settle = Duration::from_millis(ctx.args.settle_ms);
    tokio::time::sleep(settle).await;

    let stats0 = ctx.admin.stats().await?;
    let seen0 = frames_seen.load(Ordering::Relaxed);
    let before = ctx.server_stats();
    let started = Instant::now();
    let half = STORM / (2 * FLAPS as u32);
    let mut current = Some(star_client);
    for _ in 0..FLAPS {
        drop(current.take());
        tokio::time::sleep(half).await;
        let (client, events) =
            Client::connect(ctx.tcp.as_str(), &star.token, options("star".into())).await?;
        drop(events);
        current = Some(client);
        tokio::time::sleep(half).await;
    }
    let storm_s = started.elapsed().as_secs_f64();
    // Let the grace period and the coalescing window run out.
    tokio::time::sleep(settle).await;
    let stats1 = ctx.admin.stats().await?;
    let received = frames_seen.load(Ordering::Relaxed) - seen0;

    let delta = |k: &str| {
        stats1["presence"][k].as_u64().unwrap_or(0) - stats0["presence"][k].as_u64().unwrap_or(0)
    };
    let changes = 2 * FLAPS as u64;
    let naive = changes * online_n as u64;
    let frames_out = delta("frames_out");
    let line = json!({
        "scenario": "presence-storm", "transport": "tcp", "connections": online_n + 1,
        "friends": friends_n, "online_friends": online_n, "flaps": FLAPS, "duration_s": storm_s,
        "connection_changes": changes, "presence_events_in": delta("events_in"),
        "presence_frames_out": frames_out, "frames_received": received,
        "suppressed_debounced": delta("suppressed_debounced"),
        "suppressed_coalesced": delta("suppressed_coalesced"),
        "suppressed_pull_only": delta("suppressed_pull_only"),
        "naive_frames": naive,
        "reduction_factor": naive as f64 / frames_out.max(1) as f64,
    });
    drop(current);
    for (client, task) in online {
        drop(client);
        task.abort();
    }
    Ok(with_server(ctx, line, before))
}

/// Makes every one of `friends` a mutual friend of `star`: a request from the star,
/// accepted by each friend.
async fn befriend_all(ctx: &Bench, star: &LoginInfo, friends: &[LoginInfo]) -> anyhow::Result<()> {
    let star_http = ctx.http.clone().with_token(&star.token);
    let results: Vec<anyhow::Result<()>> = stream::iter(friends)
        .map(|f| {
            let star_http = star_http.clone();
            let friend_http = ctx.http.clone().with_token(&f.token);
            let (star_id, friend_id) = (star.user_id, f.user_id);
            async move {
                star_http
                    .request_friend(friend_id)
                    .await
                    .context("friend request")?;
                friend_http.accept_friend(star_id).await.context("accept")?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}
