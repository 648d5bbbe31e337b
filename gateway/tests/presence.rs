//! Presence under storms, and read receipts with the same care.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{users, TestServer, WAIT};
use courier_sdk::{ConversationId, Event, Events, NewGroup};

/// Collects presence changes from `events` (non-presence events are skipped) for `dur`.
async fn presence_frames(events: &mut Events, dur: Duration) -> Vec<Vec<(u64, bool)>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + dur;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        if let Event::Presence(batch) = e {
            out.push(
                batch
                    .changes
                    .iter()
                    .map(|c| (c.user_id, c.online))
                    .collect(),
            );
        }
    }
    out
}

async fn stats(t: &TestServer) -> serde_json::Value {
    t.admin().stats().await.unwrap()
}

/// A user with 5,000 friends, 1,000 of them online, flaps 10 times in 2 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_celebrity_does_not_storm_its_friends() {
    let t = TestServer::start_with(|c| {
        c.presence_push_max_friends = 10_000;
        c.presence_grace_ms = 1_000;
        c.presence_window_ms = 100;
    })
    .await;
    let celeb = t.user("celeb").await;
    let fans = users(&t, "fan", 1000).await;
    let mut friend_ids: Vec<u64> = fans.iter().map(|f| f.user_id).collect();
    friend_ids.extend(9_000_000..9_004_000); // 4,000 friends who never come online
    assert_eq!(
        befriend_many(&t, celeb.user_id, friend_ids.clone()).await,
        5000
    );
    let mut fan_events = Vec::new();
    for f in &fans {
        let (client, events) = t.connect(f, "phone").await;
        fan_events.push((client, events));
    }
    // Wait until the actor has seen the fans' own edges, so what follows is the celebrity's.
    let before = tokio::time::timeout(WAIT, async {
        loop {
            let s = stats(&t).await["presence"].clone();
            if s["events_in"].as_u64().unwrap() >= 1000 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // The celebrity comes online: each online fan hears of it once.
    let (first, _e) = t.connect(&celeb, "phone").await;
    let mut online_frames = 0;
    for (_, events) in fan_events.iter_mut() {
        let got = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Event::Presence(b)) = events.next().await {
                    return b;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            (got.changes[0].user_id, got.changes[0].online),
            (celeb.user_id, true)
        );
        online_frames += 1;
    }
    let after_online = stats(&t).await["presence"].clone();

    // Ten drops and returns within two seconds.
    drop(first);
    for _ in 0..10 {
        let (client, events) = t.connect(&celeb, "phone").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop((client, events));
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let (_last, _le) = t.connect(&celeb, "phone").await;
    // Past the grace period and a window: anything that was going to be sent is sent.
    let mut extra = 0;
    let mut per_fan: HashMap<usize, usize> = HashMap::new();
    let quiet = Duration::from_millis(1_300);
    let mut collectors = Vec::new();
    for (i, (client, mut events)) in fan_events.into_iter().enumerate() {
        collectors.push(tokio::spawn(async move {
            let n = presence_frames(&mut events, quiet).await.len();
            // The fans stay connected until every count is taken.
            (i, n, client, events)
        }));
    }
    let mut connected = Vec::new();
    for c in collectors {
        let (i, n, client, events) = c.await.unwrap();
        extra += n;
        per_fan.insert(i, n);
        connected.push((client, events));
    }
    let end = stats(&t).await["presence"].clone();
    let delta = |k: &str| end[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    let events_in = delta("events_in");
    let frames_out = end["frames_out"].as_u64().unwrap() - before["frames_out"].as_u64().unwrap();
    let storm_frames =
        end["frames_out"].as_u64().unwrap() - after_online["frames_out"].as_u64().unwrap();
    println!(
        "presence storm: celebrity edges in {events_in}, frames out {frames_out} ({online_frames} for the first \
         online, {storm_frames} during 10 flaps); one frame per edge per online friend would be {} frames, \
         reduction {:.1}x; suppressed: debounced {}, offline friends {}, coalesced {}",
        events_in * 1000,
        (events_in * 1000) as f64 / frames_out.max(1) as f64,
        delta("suppressed_debounced"),
        delta("suppressed_offline"),
        delta("suppressed_coalesced"),
    );
    assert_eq!(
        extra, 0,
        "flapping within the grace period announced something"
    );
    assert_eq!(storm_frames, 0);
    assert!(events_in >= 11, "the flaps were seen ({events_in} edges)");
    assert!(per_fan.values().all(|&n| n == 0));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_threshold_presence_is_pull_only() {
    let t = TestServer::start_with(|c| {
        c.presence_push_max_friends = 3;
        c.presence_grace_ms = 200;
        c.presence_window_ms = 50;
    })
    .await;
    let p = users(&t, "p", 6).await;
    let star = &p[0];
    befriend_many(&t, star.user_id, p[1..].iter().map(|u| u.user_id).collect()).await;
    let (_fan, mut fan_events) = t.connect(&p[1], "phone").await;
    let (watcher, mut watcher_events) = t.connect(&p[2], "phone").await;
    let (star_client, _se) = t.connect(star, "phone").await;
    // Five friends > 3: nothing is pushed.
    assert!(presence_frames(&mut fan_events, Duration::from_millis(400))
        .await
        .is_empty());
    assert!(
        stats(&t).await["presence"]["suppressed_pull_only"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Friends ask instead ...
    let asked = t.http_as(&p[1]).presence(&[star.user_id]).await.unwrap();
    assert_eq!(asked["users"][0]["online"], true);
    // ... or subscribe with a lease: the state now, and changes while it lasts.
    watcher
        .subscribe_presence(vec![star.user_id], Duration::from_secs(30))
        .await
        .unwrap();
    let now = presence_frames(&mut watcher_events, Duration::from_millis(300)).await;
    assert_eq!(now, vec![vec![(star.user_id, true)]]);
    drop(star_client);
    let later = presence_frames(&mut watcher_events, Duration::from_millis(800)).await;
    assert_eq!(later, vec![vec![(star.user_id, false)]]);
    assert!(presence_frames(&mut fan_events, Duration::from_millis(100))
        .await
        .is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_online_mutual_friends_are_told_and_blocks_hide_presence() {
    let t = TestServer::start_with(|c| {
        c.presence_grace_ms = 100;
        c.presence_window_ms = 50;
    })
    .await;
    let p = users(&t, "m", 4).await;
    let (alice, friend, follower, blocked) = (&p[0], &p[1], &p[2], &p[3]);
    t.http_as(friend)
        .request_friend(alice.user_id)
        .await
        .unwrap();
    t.http_as(alice)
        .accept_friend(friend.user_id)
        .await
        .unwrap();
    t.http_as(follower)
        .set_follow(alice.user_id, true)
        .await
        .unwrap();
    t.http_as(blocked)
        .request_friend(alice.user_id)
        .await
        .unwrap();
    t.http_as(alice)
        .accept_friend(blocked.user_id)
        .await
        .unwrap();
    t.http_as(alice)
        .set_block(blocked.user_id, true)
        .await
        .unwrap();
    let (_f, mut friend_events) = t.connect(friend, "phone").await;
    let (_w, mut follower_events) = t.connect(follower, "phone").await;
    let (_b, mut blocked_events) = t.connect(blocked, "phone").await;
    let (a, _ae) = t.connect(alice, "phone").await;
    assert_eq!(
        presence_frames(&mut friend_events, Duration::from_millis(300)).await,
        vec![vec![(alice.user_id, true)]]
    );
    drop(a);
    assert_eq!(
        presence_frames(&mut friend_events, Duration::from_millis(600)).await,
        vec![vec![(alice.user_id, false)]]
    );
    assert!(
        presence_frames(&mut follower_events, Duration::from_millis(50))
            .await
            .is_empty()
    );
    assert!(
        presence_frames(&mut blocked_events, Duration::from_millis(50))
            .await
            .is_empty()
    );
    let asked = t.http_as(blocked).presence(&[alice.user_id]).await.unwrap();
    assert!(
        asked["users"].as_array().unwrap().is_empty(),
        "a blocked user cannot see presence"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_reach_the_peer_and_are_coalesced_in_groups() {
    let t = TestServer::start_with(|c| c.receipt_window_ms = 400).await;
    let p = users(&t, "rr", 500).await;
    // 1:1: the peer hears of the read.
    let (a, mut a_events) = t.connect(&p[0], "phone").await;
    let d = a.direct_with(p[1].user_id).unwrap();
    let seq = a.send_text(&d, "did you read this?").await.unwrap().seq;
    t.http_as(&p[1]).mark_read(&d, seq).await.unwrap();
    let r = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::ReadReceipt(r)) = a_events.next().await {
                return r;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (r.conversation.as_str(), r.reader, r.seq),
        (&*d.to_string(), p[1].user_id, seq)
    );

    // A 500-member group: 100 members read; the sender gets aggregated receipts, not 100.
    let g = t
        .http_as(&p[0])
        .create_group(&NewGroup {
            name: "auditorium".into(),
            members: p[1..].iter().map(|u| u.user_id).collect(),
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let seq = a.send_text(&c, "please read").await.unwrap().seq;
    let before = stats(&t).await["receipts"].clone();
    let readers: Vec<_> = p[1..101].iter().map(|u| t.http_as(u)).collect();
    let reads = readers.iter().map(|h| h.mark_read(&c, seq));
    for r in futures_util::future::join_all(reads).await {
        r.unwrap();
    }
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, a_events.next()).await {
        if let Event::ReadReceipt(r) = e {
            if r.conversation == c.to_string() {
                frames.push(r);
            }
        }
    }
    let after = stats(&t).await["receipts"].clone();
    println!(
        "group receipts: 100 reads -> {} receipt frames to the sender; reports in {}, coalesced {}",
        frames.len(),
        after["reports_in"].as_u64().unwrap() - before["reports_in"].as_u64().unwrap(),
        after["suppressed_coalesced"].as_u64().unwrap()
            - before["suppressed_coalesced"].as_u64().unwrap(),
    );
    assert!(
        !frames.is_empty() && frames.len() <= 5,
        "{} frames",
        frames.len()
    );
    assert_eq!(frames.last().unwrap().readers, 100);
    assert_eq!(frames.last().unwrap().seq, seq);
    let reads = t.http_as(&p[0]).reads(&c, seq).await.unwrap();
    assert_eq!(reads["count"], 100);
    assert_eq!(reads["readers"].as_array().unwrap().len(), 100);
    t.stop().await;
}

/// Makes `user` friends with each of `peers` through the bulk import path.
async fn befriend_many(t: &TestServer, user: u64, peers: Vec<u64>) -> usize {
    t.server
        .api()
        .import_friendships(user, peers)
        .await
        .unwrap()
}
