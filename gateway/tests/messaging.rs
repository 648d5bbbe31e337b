//! One-to-one messaging end to end: a real gateway on loopback, clients through the SDK.

mod common;

use std::collections::HashSet;

use common::{next_message, TestServer};
use courier_sdk::pb::{self, Direction};
use courier_sdk::{ConversationId, ErrorCode, HistoryQuery, SdkError};
use futures_util::stream::{FuturesOrdered, StreamExt};

/// Sends `n` texts `"{prefix} {i}"` with up to 32 in flight; returns the seqs in send order.
async fn send_many(
    client: &courier_sdk::Client,
    c: ConversationId,
    prefix: &str,
    n: usize,
) -> Vec<u64> {
    let mut in_flight = FuturesOrdered::new();
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        // Queued one by one (so stored in order), acknowledged concurrently.
        let ack = client
            .submit_send(
                &c,
                pb::MessageBody::text(format!("{prefix} {i}")),
                courier_sdk::new_client_msg_id(),
            )
            .await
            .unwrap();
        in_flight.push_back(async move { ack.await.unwrap().seq });
        if in_flight.len() >= 32 {
            seqs.push(in_flight.next().await.unwrap());
        }
    }
    while let Some(seq) = in_flight.next().await {
        seqs.push(seq);
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_each_way_arrive_once_and_in_order() {
    const N: usize = 1000;
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, a_events) = t.connect(&alice, "alice-phone").await;
    let (b, b_events) = t.connect(&bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();

    let receive = |mut events: courier_sdk::Events, from: u64, prefix: &'static str| async move {
        let mut last_seq = 0;
        let mut texts = Vec::new();
        while texts.len() < N {
            let m = next_message(&mut events).await;
            assert!(
                m.seq > last_seq,
                "seq {} after {last_seq}: out of order or duplicate",
                m.seq
            );
            last_seq = m.seq;
            if m.sender == from {
                texts.push(m.body.unwrap().as_text().unwrap().to_owned());
            }
        }
        // Nothing more may arrive: no duplicates trailing behind.
        if let Some(e) = events.try_next() {
            panic!("after the last message came {e:?}");
        }
        assert_eq!(
            texts,
            (0..N).map(|i| format!("{prefix} {i}")).collect::<Vec<_>>()
        );
    };
    let a_rx = tokio::spawn(receive(a_events, bob.user_id, "from bob"));
    let b_rx = tokio::spawn(receive(b_events, alice.user_id, "from alice"));
    let (a_seqs, b_seqs) = tokio::join!(
        send_many(&a, c, "from alice", N),
        send_many(&b, c, "from bob", N)
    );
    a_rx.await.unwrap();
    b_rx.await.unwrap();

    // Acks of one connection come back in send order; together the seqs are 1..=2N.
    assert!(a_seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(b_seqs.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<u64> = a_seqs.into_iter().chain(b_seqs).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=2 * N as u64).collect::<Vec<_>>());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_catches_up_through_history() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _a_events) = t.connect(&alice, "alice-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seqs = send_many(&a, c, "while you were away", 250).await;
    assert_eq!(seqs, (1..=250).collect::<Vec<_>>());

    // Bob comes online later: nothing is pushed for the past, history has it all.
    let (_b, mut b_events) = t.connect(&bob, "bob-phone").await;
    let bob_http = t.http_as(&bob);
    let all = bob_http.history_all(&c, 0).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=250).collect::<Vec<_>>()
    );
    assert!(all.iter().enumerate().all(|(i, m)| m.text.as_deref()
        == Some(&*format!("while you were away {i}"))
        && m.from == alice.user_id
        && m.server_time_ms > 0));
    // Only the fan-out of the last batch can race with Bob's login (the ack returns
    // before the commit is routed); nothing older is pushed.
    while let Some(e) = b_events.try_next() {
        if let courier_sdk::Event::Message(m) = e {
            assert!(m.seq > 250 - 64, "old message {} pushed on login", m.seq);
        }
    }

    // Default page is 20, newest first from the top; `before` pages backwards.
    let latest = bob_http.history(&c, HistoryQuery::default()).await.unwrap();
    assert_eq!(latest.messages.len(), 20);
    assert_eq!(latest.messages.first().unwrap().seq, 231);
    assert!(latest.has_more);
    let older = bob_http
        .history(
            &c,
            HistoryQuery {
                before: Some(231),
                limit: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![226, 227, 228, 229, 230]
    );
    // The page size is capped (100 by default).
    let big = bob_http
        .history(
            &c,
            HistoryQuery {
                after: Some(0),
                limit: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(big.messages.len(), 100);

    // The conversation list shows it with an unread count.
    let list = bob_http.conversations(None, None).await.unwrap();
    let entry = &list.conversations[0];
    assert_eq!(entry.conversation, c.to_string());
    assert_eq!(entry.last_seq, 250);
    assert_eq!(entry.unread, 250);
    assert_eq!(bob_http.mark_read(&c, 200).await.unwrap(), 200);
    assert_eq!(
        bob_http.mark_read(&c, 100).await.unwrap(),
        200,
        "read cursor only moves forward"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_other_devices_see_what_it_sends() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (phone, mut phone_events) = t.connect(&alice, "alice-phone").await;
    let (_laptop, mut laptop_events) = t.connect(&alice, "alice-laptop").await;
    let (_bob_phone, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let c = phone.direct_with(bob.user_id).unwrap();
    for i in 1..=20u64 {
        let receipt = phone.send_text(&c, format!("note {i}")).await.unwrap();
        assert_eq!(receipt.seq, i);
        for events in [&mut laptop_events, &mut bob_events] {
            let m = next_message(events).await;
            assert_eq!(
                (m.seq, m.sender, m.sender_device.as_str()),
                (i, alice.user_id, "alice-phone")
            );
        }
    }
    // The sending device itself is not sent its own messages.
    assert!(phone_events.try_next().is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_stored_and_delivered_once() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _a_events) = t.connect(&alice, "alice-phone").await;
    let (_b, mut b_events) = t.connect(&bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let body = pb::MessageBody::text("only once");
    let first = a.send(&c, body.clone(), "retry-me".into()).await.unwrap();
    let again = a.send(&c, body.clone(), "retry-me".into()).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.seq, again.seq);
    assert_eq!(first.server_time_ms, again.server_time_ms);
    let next = a.send_text(&c, "after").await.unwrap();
    assert_eq!(next.seq, first.seq + 1);
    let seen: Vec<u64> = vec![
        next_message(&mut b_events).await.seq,
        next_message(&mut b_events).await.seq,
    ];
    assert_eq!(seen, vec![1, 2]);
    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    assert_eq!(history.len(), 2);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_the_binary_protocol_and_sync() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    let (a, _a_events) = t.connect(&alice, "alice-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let d = a.direct_with(carol.user_id).unwrap();
    send_many(&a, c, "to bob", 30).await;
    send_many(&a, d, "to carol", 5).await;

    let page = a
        .pull_history(&c, Direction::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );
    assert!(page.has_more);
    let page = a
        .pull_history(&c, Direction::Forward, 25, 10)
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (26..=30).collect::<Vec<_>>()
    );
    assert!(!page.has_more);

    let sync = a
        .sync(vec![
            pb::Cursor {
                conversation: c.to_string(),
                seq: 28,
            },
            pb::Cursor {
                conversation: d.to_string(),
                seq: 5,
            },
        ])
        .await
        .unwrap();
    assert_eq!(sync.conversations.len(), 1, "only the changed conversation");
    assert_eq!(sync.conversations[0].conversation, c.to_string());
    assert_eq!(sync.conversations[0].new_since_cursor, 2);
    assert_eq!(sync.conversations[0].last_message.as_ref().unwrap().seq, 30);
    let fresh = a.sync(Vec::new()).await.unwrap();
    let ids: HashSet<String> = fresh
        .conversations
        .iter()
        .map(|s| s.conversation.clone())
        .collect();
    assert_eq!(ids, HashSet::from([c.to_string(), d.to_string()]));

    // Carol cannot read Alice and Bob's conversation, by either protocol.
    let (carol_client, _e) = t.connect(&carol, "carol-phone").await;
    let err = carol_client
        .pull_history(&c, Direction::Backward, 0, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = t
        .http_as(&carol)
        .history(&c, HistoryQuery::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Http { status: 403, .. }), "{err:?}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_traffic() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "phone").await;
    let (_b, mut be) = t.connect(&bob, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for i in 0..5 {
        a.send_text(&c, format!("m{i}")).await.unwrap();
    }
    for _ in 0..5 {
        next_message(&mut be).await;
    }
    // An operator route: refused without the admin token.
    let err = t.http.metrics().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err:?}");
    assert!(t.http_as(&alice).metrics().await.is_err());
    let text = t.admin().metrics().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(value("courier_sessions{transport=\"tcp\"}"), 2.0);
    assert_eq!(value("courier_handshakes_total{transport=\"tcp\"}"), 2.0);
    assert_eq!(value("courier_messages_stored_total"), 5.0);
    assert!(value("courier_deliveries_total") >= 5.0);
    assert!(value("courier_frames_in_total") >= 5.0);
    assert!(value("courier_frames_out_total") >= 10.0);
    assert_eq!(
        value("courier_commit_batch_size_count"),
        value("courier_commit_flush_seconds_count")
    );
    assert!(value("courier_commit_flush_seconds_count") >= 1.0);
    t.stop().await;
}
