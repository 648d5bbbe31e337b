//! Recall: who may, until when, and how everyone learns of it.

mod common;

use common::{next_message, TestServer};
use courier_sdk::pb::{self, message_body::Content, system_event::Event as SysEvent};
use courier_sdk::{ConversationId, ErrorCode, NewGroup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_reaches_everyone_and_history_hides_the_content() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "phone").await;
    let (_a2, mut a2_events) = t.connect(&alice, "laptop").await;
    let (b, mut b_events) = t.connect(&bob, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seq = a.send_text(&c, "oops, wrong chat").await.unwrap().seq;
    a.send_text(&c, "fine").await.unwrap();
    // Bob pulled the message before the recall.
    assert_eq!(next_message(&mut b_events).await.seq, seq);
    let cursor = next_message(&mut b_events).await.seq;
    next_message(&mut a2_events).await;
    next_message(&mut a2_events).await;

    // Bob may not recall Alice's message.
    assert_eq!(
        b.recall(&c, seq).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    let event_seq = a.recall(&c, seq).await.unwrap();
    assert_eq!(event_seq, 3);
    assert_eq!(
        a.recall(&c, seq).await.unwrap_err().code(),
        Some(ErrorCode::AlreadyExists)
    );
    // The recall event is pushed to Bob and Alice's other device.
    for events in [&mut b_events, &mut a2_events] {
        let m = next_message(events).await;
        assert_eq!(m.seq, event_seq);
        match m.body.and_then(|b| b.content) {
            Some(Content::System(pb::SystemEvent {
                event: Some(SysEvent::MessageRecalled(r)),
            })) => {
                assert_eq!((r.seq, r.by_user), (seq, alice.user_id));
            }
            other => panic!("expected a recall event, got {other:?}"),
        }
    }
    // A client syncing from its cursor learns of the recall.
    let sync = b
        .sync(vec![pb::Cursor {
            conversation: c.to_string(),
            seq: cursor,
        }])
        .await
        .unwrap();
    assert_eq!(sync.conversations[0].new_since_cursor, 1);
    let page = b
        .pull_history(&c, pb::Direction::Forward, cursor, 10)
        .await
        .unwrap();
    assert_eq!(page.messages[0].seq, event_seq);
    // History never shows the content again.
    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    let recalled = &history[(seq - 1) as usize];
    assert!(recalled.text.is_none());
    assert!(recalled.body.is_null());
    let raw = t.http_as(&bob).reads(&c, 2).await.unwrap();
    assert_eq!(raw["count"], 0);
    // System events cannot be recalled.
    assert_eq!(
        a.recall(&c, event_seq).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recall_window_and_group_moderators() {
    let t = TestServer::start_with(|c| c.recall_window_ms = 0).await;
    let p = common::users(&t, "g", 3).await;
    let g = t
        .http_as(&p[0])
        .create_group(&NewGroup {
            name: "mods".into(),
            members: vec![p[1].user_id, p[2].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (member, _e1) = t.connect(&p[1], "phone").await;
    let (other, _e2) = t.connect(&p[2], "phone").await;
    let seq = member.send_text(&c, "regret").await.unwrap().seq;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Past the window (0 ms here) the sender may no longer recall ...
    assert_eq!(
        member.recall(&c, seq).await.unwrap_err().code(),
        Some(ErrorCode::RecallExpired)
    );
    // ... another member never may ...
    assert_eq!(
        other.recall(&c, seq).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    // ... the owner (over HTTP here) may, at any time.
    let owner = t.http_as(&p[0]);
    let event_seq = owner.recall(&c, seq).await.unwrap();
    assert!(event_seq > seq);
    assert_eq!(
        owner.recall(&c, 999).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    t.stop().await;
}
