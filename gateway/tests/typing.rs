//! Typing indicators over the binary protocol against a real gateway: they reach
//! the peer and the sender's other devices, are throttled per sender, are never
//! stored, need membership, and stay out of groups past `typing_max_members` and
//! across blocks.

mod common;

use std::time::Duration;

use common::{next_message, TestServer, WAIT};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{ConversationId, ErrorCode};
use courier_sdk::{Event, Events, HistoryQuery, NewGroup};

/// The next typing notice, skipping other events but messages; panics on a
/// message first (a notice that should have come before it did not).
async fn next_typing(events: &mut Events) -> pb::TypingNotice {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Typing(t))) => return t,
            Ok(Some(Event::Message(m))) => panic!("a message before the notice: {m:?}"),
            Ok(Some(Event::Closed)) | Ok(None) => panic!("closed"),
            Ok(Some(_)) => continue,
            Err(_) => panic!("no typing notice within {WAIT:?}"),
        }
    }
}

/// The next event that is a message or a typing notice.
async fn next_of_interest(events: &mut Events) -> Event {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
            Some(e @ (Event::Typing(_) | Event::Message(_))) => return e,
            Some(Event::Closed) | None => panic!("closed"),
            Some(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_peer_is_throttled_and_never_stored() {
    // A long interval: repeats within a test are always inside it.
    let t = TestServer::start_with(|c| c.typing_interval_ms = 60_000).await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a1, mut a1_events) = t.connect(&alice, "alice-phone").await;
    let (_a2, mut a2_events) = t.connect(&alice, "alice-laptop").await;
    let (_b, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let c = a1.direct_with(bob.user_id).unwrap();

    a1.typing(&c, true).await.unwrap();
    let notice = next_typing(&mut bob_events).await;
    assert_eq!(
        (
            notice.conversation.as_str(),
            notice.user_id,
            notice.active,
            notice.expires_ms
        ),
        (c.to_string().as_str(), alice.user_id, true, 120_000)
    );
    assert_eq!(next_typing(&mut a2_events).await.user_id, alice.user_id);
    // Repeats inside the interval go nowhere; the stop does, right behind the start.
    for _ in 0..3 {
        a1.typing(&c, true).await.unwrap();
    }
    a1.typing(&c, false).await.unwrap();
    assert!(!next_typing(&mut bob_events).await.active);
    assert!(!next_typing(&mut a2_events).await.active);
    // After a stop, a new start goes out at once; then a message, in order.
    a1.typing(&c, true).await.unwrap();
    a1.send_text(&c, "hi").await.unwrap();
    assert!(next_typing(&mut bob_events).await.active);
    assert_eq!(common::text_of(&next_message(&mut bob_events).await), "hi");
    // The sender's own device heard none of it.
    while let Some(e) = a1_events.try_next() {
        assert!(
            !matches!(e, Event::Typing(_)),
            "the typing device got {e:?}"
        );
    }
    let metrics = t.admin().metrics().await.unwrap();
    assert!(
        metrics.contains("courier_typing_notices_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("courier_typing_throttled_total 3"),
        "{metrics}"
    );

    // Never stored: the conversation holds the one message.
    let page = t
        .http_as(&bob)
        .history(&c, HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_needs_membership_and_stays_out_of_big_groups_and_blocks() {
    let t = TestServer::start_with(|c| c.typing_max_members = 3).await;
    let (alice, bob, carol, dave) = (
        t.user("alice").await,
        t.user("bob").await,
        t.user("carol").await,
        t.user("dave").await,
    );
    let group = |name: &str, members: Vec<u64>| NewGroup {
        name: name.into(),
        join_policy: None,
        history_visible: None,
        members,
    };
    let a = t.http_as(&alice);
    let small = a
        .create_group(&group("small", vec![bob.user_id, carol.user_id]))
        .await
        .unwrap();
    let big = a
        .create_group(&group(
            "big",
            vec![bob.user_id, carol.user_id, dave.user_id],
        ))
        .await
        .unwrap();
    let (small, big) = (
        ConversationId::Group(small.group_id),
        ConversationId::Group(big.group_id),
    );
    let (alice_c, _alice_events) = t.connect(&alice, "alice-phone").await;
    let (_b, mut bob_events) = t.connect(&bob, "bob-phone").await;

    alice_c.typing(&small, true).await.unwrap();
    let notice = next_typing(&mut bob_events).await;
    assert_eq!(notice.conversation, small.to_string());
    // Four members is past the limit: nothing, and the message after it comes first.
    alice_c.typing(&big, true).await.unwrap();
    alice_c.send_text(&big, "in the big group").await.unwrap();
    match next_of_interest(&mut bob_events).await {
        Event::Message(m) => assert_eq!(common::text_of(&m), "in the big group"),
        other => panic!("{other:?}"),
    }

    // A block: bob blocks alice; her typing to him goes nowhere, carol's does.
    t.http_as(&bob)
        .set_block(alice.user_id, true)
        .await
        .unwrap();
    let direct = alice_c.direct_with(bob.user_id).unwrap();
    alice_c.typing(&direct, true).await.unwrap();
    let (carol_c, _carol_events) = t.connect(&carol, "carol-phone").await;
    let from_carol = carol_c.direct_with(bob.user_id).unwrap();
    carol_c.typing(&from_carol, true).await.unwrap();
    assert_eq!(next_typing(&mut bob_events).await.user_id, carol.user_id);

    // Not a member, not a participant: FORBIDDEN, and nobody hears of it.
    let mut raw = t.raw().await;
    raw.hello(&dave.token).await;
    for (id, conversation) in [(7, small.to_string()), (8, direct.to_string())] {
        let typing = pb::Typing {
            conversation,
            active: true,
        };
        raw.send(&Frame::new(id, Kind::Typing(typing))).await;
        let answer = tokio::time::timeout(Duration::from_secs(20), raw.recv())
            .await
            .unwrap()
            .unwrap();
        match answer.kind {
            Some(Kind::Error(e)) => {
                assert_eq!(
                    (answer.request_id, e.code),
                    (id, ErrorCode::Forbidden as i32)
                )
            }
            other => panic!("{other:?}"),
        }
    }
    t.stop().await;
}
