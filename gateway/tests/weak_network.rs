//! Offline compensation and weak networks over TCP: blackouts, resends, resync,
//! restarts, and sync after a long absence. Nothing lost, nothing doubled.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::{next_message, users, TestServer, WAIT};
use courier_sdk::pb::{self, Direction};
use courier_sdk::{
    ClientOptions, ConversationId, FileCursorStore, Session, SessionEvent, SessionEvents,
    SessionOptions,
};

fn session_options(device: &str, cursors: Arc<dyn courier_sdk::CursorStore>) -> SessionOptions {
    SessionOptions {
        client: ClientOptions {
            device_id: device.into(),
            ..ClientOptions::default()
        },
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        cursors,
        ..SessionOptions::default()
    }
}

/// The next `n` messages a session hands over, checking order and uniqueness.
async fn take_messages(events: &mut SessionEvents, n: usize) -> Vec<pb::Message> {
    let mut out: Vec<pb::Message> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            match events.next().await {
                Some(SessionEvent::Message(m)) => {
                    if let Some(last) = out.iter().rev().find(|p| p.conversation == m.conversation)
                    {
                        assert!(
                            m.seq > last.seq,
                            "seq {} after {}: out of order or doubled",
                            m.seq,
                            last.seq
                        );
                    }
                    out.push(*m);
                }
                Some(SessionEvent::Ended(code)) => panic!("session ended: {code:?}"),
                Some(_) => {}
                None => panic!("session gone"),
            }
        }
    })
    .await
    .expect("messages in time");
    out
}

fn texts(ms: &[pb::Message]) -> Vec<String> {
    ms.iter()
        .map(|m| m.body.as_ref().unwrap().as_text().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_tcp_blackout_loses_and_doubles_nothing() {
    let t = TestServer::start_with(|c| {
        c.heartbeat_interval_ms = 200;
        c.idle_timeout_ms = 800;
    })
    .await;
    let p = users(&t, "w", 2).await;
    let (alice, bob) = (&p[0], &p[1]);
    let proxy = TcpProxy::start(t.server.tcp_addr(), Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let cursors = Arc::new(FileCursorStore::open(dir.path().join("cursors.json")).unwrap());
    let (session, mut events) = Session::start(
        proxy.addr.to_string(),
        &alice.token,
        session_options("phone", cursors),
    )
    .await
    .unwrap();
    let (b, mut b_events) = t.connect(bob, "phone").await;
    let c = b.direct_with(alice.user_id).unwrap();

    for i in 0..100 {
        b.send_text(&c, format!("b{i}")).await.unwrap();
    }
    assert_eq!(
        texts(&take_messages(&mut events, 100).await),
        (0..100).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );

    // Five seconds without a network. Bob keeps talking; Alice keeps typing.
    proxy.blackout(Duration::from_secs(5));
    let blackout_started = Instant::now();
    let mut alice_sends = Vec::new();
    for i in 0..50 {
        let s = session.clone();
        alice_sends.push(tokio::spawn(async move {
            s.send_text(&c, format!("a{i}")).await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for i in 100..300 {
        b.send_text(&c, format!("b{i}")).await.unwrap();
    }
    let back = blackout_started + Duration::from_secs(5);
    let missed = take_messages(&mut events, 200).await;
    let synced = Instant::now();
    assert_eq!(
        texts(&missed),
        (100..300).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );
    let mut acked = Vec::new();
    for s in alice_sends {
        acked.push(s.await.unwrap().unwrap().seq);
    }
    let all_acked = Instant::now();
    // Alice's 50 arrive at Bob once each, in her order.
    let mut from_alice = Vec::new();
    while from_alice.len() < 50 {
        let m = next_message(&mut b_events).await;
        from_alice.push(m.body.unwrap().as_text().unwrap().to_owned());
    }
    let mut sorted = from_alice.clone();
    sorted.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    sorted.dedup();
    assert_eq!(sorted.len(), 50, "each of Alice's messages exactly once");
    let history = t.http_as(bob).history_all(&c, 0).await.unwrap();
    assert_eq!(history.len(), 350, "stored once each");
    println!(
        "tcp blackout 5 s: network back to all 200 missed messages handed over {:.0} ms; to all 50 queued sends acked {:.0} ms",
        synced.saturating_duration_since(back).as_secs_f64() * 1000.0,
        all_acked.saturating_duration_since(back).as_secs_f64() * 1000.0,
    );
    // Nothing more, no duplicates trailing.
    let extra = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(SessionEvent::Message(m)) = events.next().await {
                return m;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "a message was handed over twice: {extra:?}");
    drop(session);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_restart_resumes_from_its_file_cursors() {
    let t = TestServer::start().await;
    let p = users(&t, "r", 2).await;
    let (alice, bob) = (&p[0], &p[1]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursors.json");
    let (b, _be) = t.connect(bob, "phone").await;
    let c = b.direct_with(alice.user_id).unwrap();
    {
        let cursors = Arc::new(FileCursorStore::open(&path).unwrap());
        let (session, mut events) = Session::start(
            t.server.tcp_addr().to_string(),
            &alice.token,
            session_options("phone", cursors),
        )
        .await
        .unwrap();
        for i in 0..30 {
            b.send_text(&c, format!("first {i}")).await.unwrap();
        }
        assert_eq!(take_messages(&mut events, 30).await.len(), 30);
        drop(session);
    }
    for i in 0..20 {
        b.send_text(&c, format!("while closed {i}")).await.unwrap();
    }
    // The app starts again with the same cursor file: exactly the 20 new ones.
    let cursors = Arc::new(FileCursorStore::open(&path).unwrap());
    let (_session, mut events) = Session::start(
        t.server.tcp_addr().to_string(),
        &alice.token,
        session_options("phone", cursors),
    )
    .await
    .unwrap();
    let got = take_messages(&mut events, 20).await;
    assert_eq!(
        texts(&got),
        (0..20)
            .map(|i| format!("while closed {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(got[0].seq, 31);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_after_a_long_absence_says_what_changed_and_paging_fetches_it() {
    let t = TestServer::start().await;
    let p = users(&t, "s", 21).await;
    let me = &p[0];
    // 500 messages in 20 conversations while `me` is offline: 25 each.
    for (i, peer) in p[1..].iter().enumerate() {
        let (client, _e) = t.connect(peer, "phone").await;
        let c = client.direct_with(me.user_id).unwrap();
        for n in 0..25 {
            client.send_text(&c, format!("{i}:{n}")).await.unwrap();
        }
    }
    let (client, _events) = t.connect(me, "phone").await;
    let sync = client.sync(Vec::new()).await.unwrap();
    assert_eq!(sync.conversations.len(), 20);
    assert!(sync
        .conversations
        .iter()
        .all(|s| s.new_since_cursor == 25 && s.unread == 25 && s.last_seq == 25));
    let mut total = 0;
    for state in &sync.conversations {
        let c: ConversationId = state.conversation.parse().unwrap();
        let mut cursor = 0;
        loop {
            let page = client
                .pull_history(&c, Direction::Forward, cursor, 10)
                .await
                .unwrap();
            let Some(last) = page.messages.last() else {
                break;
            };
            assert_eq!(page.messages.first().unwrap().seq, cursor + 1);
            cursor = last.seq;
            total += page.messages.len();
            if !page.has_more {
                break;
            }
        }
        assert_eq!(cursor, 25);
    }
    assert_eq!(total, 500);
    // A fresh install pages through its conversation list.
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client.sync_page(Vec::new(), 7, token).await.unwrap();
        assert!(page.conversations.len() <= 7);
        seen.extend(page.conversations.into_iter().map(|s| s.conversation));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((seen.len(), pages), (20, 3));
    // With cursors, only what changed comes back.
    let cursors: Vec<pb::Cursor> = sync
        .conversations
        .iter()
        .enumerate()
        .map(|(i, s)| pb::Cursor {
            conversation: s.conversation.clone(),
            seq: if i < 5 { 20 } else { 25 },
        })
        .collect();
    let again = client.sync(cursors).await.unwrap();
    assert_eq!(again.conversations.len(), 5);
    assert!(again.conversations.iter().all(|s| s.new_since_cursor == 5));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_past_the_retention_depth_return_nothing_and_say_so() {
    let t = TestServer::start_with(|c| c.history_retention_messages = 10).await;
    let p = users(&t, "k", 2).await;
    let (a, _ae) = t.connect(&p[0], "phone").await;
    let c = a.direct_with(p[1].user_id).unwrap();
    for i in 0..25 {
        a.send_text(&c, format!("m{i}")).await.unwrap();
    }
    let http = t.http_as(&p[1]);
    let all = http.history_all(&c, 0).await.unwrap();
    assert_eq!(all.first().unwrap().seq, 16);
    assert_eq!(all.len(), 10);
    let old = http
        .history(
            &c,
            courier_sdk::HistoryQuery {
                before: Some(12),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(old.messages.is_empty() && !old.has_more);
    assert_eq!(old.retained_from_seq, 16);
    let page = a
        .pull_history(&c, Direction::Backward, 10, 5)
        .await
        .unwrap();
    assert!(page.messages.is_empty());
    assert_eq!(page.retained_from_seq, 16);
    t.stop().await;
}

/// A send the server refuses for now (here: the stranger rate limit, 60 a minute)
/// stays in the session's outbox and goes again when the server said: every message
/// is stored once, none is dropped, the app is answered with its receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sends_are_retried_when_the_server_says() {
    let t = TestServer::start_with(|c| {
        c.rate_limits = courier_gateway::config::Switch::On;
        c.rate_stranger_sends_per_minute = 60;
    })
    .await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (session, _events) = Session::start(
        t.server.tcp_addr().to_string(),
        &alice.token,
        session_options(
            "alice-phone",
            Arc::new(courier_sdk::MemoryCursorStore::default()),
        ),
    )
    .await
    .unwrap();
    let c = ConversationId::direct(alice.user_id, bob.user_id).unwrap();
    let mut acks = Vec::new();
    for i in 0..63 {
        let ack = session
            .submit_send(&c, pb::MessageBody::text(format!("m{i}")), format!("m{i}"))
            .await
            .unwrap();
        acks.push(ack);
    }
    let started = std::time::Instant::now();
    let mut seqs = Vec::new();
    for ack in acks {
        let receipt = tokio::time::timeout(WAIT, ack)
            .await
            .expect("every send acknowledged in time")
            .expect("retried, not dropped");
        seqs.push(receipt.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=63).collect::<Vec<_>>());
    println!(
        "3 sends past the limit went through {:?} later",
        started.elapsed()
    );
    let refused = t
        .server
        .api()
        .limits
        .refused()
        .find(|(l, _)| *l == courier_gateway::api::limits::Limit::StrangerSend);
    assert!(refused.unwrap().1 >= 3, "the limit did refuse them first");
    t.stop().await;
}
