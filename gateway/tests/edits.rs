//! Edits against a real gateway: who may edit, until when and how often; how every
//! device learns of an edit (live, and by syncing from its cursor); what history
//! shows; the versions policy; and a recall of an edited message.

mod common;

use common::{next_message, TestServer};
use courier_sdk::pb::{self, message_body::Content, system_event::Event as SysEvent};
use courier_sdk::{ConversationId, ErrorCode, NewGroup};

/// The edit a message carries, if it is an edit event.
fn edit_of(m: &pb::Message) -> Option<pb::MessageEdited> {
    match m.body.as_ref()?.content.as_ref()? {
        Content::System(pb::SystemEvent {
            event: Some(SysEvent::MessageEdited(e)),
        }) => Some(e.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_reaches_every_device_and_history_shows_the_latest_text() {
    let t = TestServer::start().await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, _ae) = t.connect(&alice, "phone").await;
    let (_a2, mut a2_events) = t.connect(&alice, "laptop").await;
    let (b, mut b_events) = t.connect(&bob, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seq = a.send_text(&c, "helo").await.unwrap().seq;
    b.send_text(&c, "hi").await.unwrap();
    // Bob's only device sent the second one itself.
    next_message(&mut b_events).await;
    next_message(&mut a2_events).await;
    next_message(&mut a2_events).await;
    let cursor = 2;

    let ack = a
        .edit(&c, seq, "hello @bob", vec![bob.user_id, 424242])
        .await
        .unwrap();
    assert_eq!((ack.seq, ack.event_seq), (seq, 3));
    // Bob and Alice's laptop get the edit event, with the new text and the mentions
    // that may reach (not a stranger's id).
    for events in [&mut b_events, &mut a2_events] {
        let m = next_message(events).await;
        assert_eq!(m.seq, ack.event_seq);
        let e = edit_of(&m).expect("an edit event");
        assert_eq!((e.seq, e.by_user), (seq, alice.user_id));
        let text = e.text.unwrap();
        assert_eq!(text.text, "hello @bob");
        assert_eq!(text.mentions, [bob.user_id]);
    }
    // A device that syncs from its cursor learns of it.
    let (b2, _b2e) = t.connect(&bob, "tablet").await;
    let sync = b2
        .sync(vec![pb::Cursor {
            conversation: c.to_string(),
            seq: cursor,
        }])
        .await
        .unwrap();
    assert_eq!(sync.conversations[0].new_since_cursor, 1);
    let page = b2
        .pull_history(&c, pb::Direction::Forward, cursor, 10)
        .await
        .unwrap();
    assert_eq!(edit_of(&page.messages[0]).unwrap().seq, seq);
    // History shows the message with its latest text and the mark.
    let page = b2
        .pull_history(&c, pb::Direction::Backward, 0, 10)
        .await
        .unwrap();
    let edited = &page.messages[0];
    assert_eq!(common::text_of(edited), "hello @bob");
    let mark = edited.edited.expect("an edited mark");
    assert_eq!(
        (mark.by_user, mark.count, mark.event_seq),
        (alice.user_id, 1, 3)
    );
    assert!(page.messages[1].edited.is_none());
    let http = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    assert_eq!(http[0].text.as_deref(), Some("hello @bob"));
    assert_eq!(http[0].edited.as_ref().unwrap()["count"], 1);
    assert_eq!(http[2].body["event"], "message_edited");

    // Nobody edits another's message; events and missing messages are no text.
    assert_eq!(
        b.edit(&c, seq, "mine now", vec![])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        a.edit(&c, ack.event_seq, "x", vec![])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::InvalidArgument)
    );
    assert_eq!(
        a.edit(&c, 99, "x", vec![]).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    // Over HTTP, Bob edits his own.
    let event_seq = t.http_as(&bob).edit(&c, 2, "hi!").await.unwrap();
    assert_eq!(event_seq, 4);

    // A recall of the edited message takes every version along.
    a.recall(&c, seq).await.unwrap();
    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    for i in [0, 2] {
        let m = &history[i];
        assert!(m.recalled.is_some(), "{m:?}");
        assert!(
            m.text.is_none() && m.body.is_null() && m.edited.is_none(),
            "{m:?}"
        );
    }
    assert_eq!(history[1].text.as_deref(), Some("hi!"));
    assert_eq!(
        a.edit(&c, seq, "again", vec![]).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_admins_never_edit_and_edits_are_counted() {
    let t = TestServer::start_with(|c| c.edit_max_count = 2).await;
    let p = common::users(&t, "ge", 2).await;
    let g = t
        .http_as(&p[0])
        .create_group(&NewGroup {
            name: "edits".into(),
            members: vec![p[1].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (owner, _oe) = t.connect(&p[0], "phone").await;
    let (member, _me) = t.connect(&p[1], "phone").await;
    let seq = member.send_text(&c, "draft").await.unwrap().seq;
    assert_eq!(
        owner
            .edit(&c, seq, "owner's words", vec![])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    member.edit(&c, seq, "draft 2", vec![]).await.unwrap();
    member.edit(&c, seq, "draft 3", vec![]).await.unwrap();
    assert_eq!(
        member
            .edit(&c, seq, "draft 4", vec![])
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::EditExpired)
    );
    let page = owner
        .pull_history(&c, pb::Direction::Forward, seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(common::text_of(&page.messages[0]), "draft 3");
    assert_eq!(page.messages[0].edited.as_ref().unwrap().count, 2);
    // Media cannot be edited, and a non-member edits nothing.
    let outsider = t.user("ge-outsider").await;
    let (o, _oe2) = t.connect(&outsider, "phone").await;
    assert_eq!(
        o.edit(&c, seq, "in", vec![]).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edit_window_closes() {
    let t = TestServer::start_with(|c| c.edit_window_ms = 1).await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, _ae) = t.connect(&alice, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seq = a.send_text(&c, "late").await.unwrap().seq;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        a.edit(&c, seq, "later", vec![]).await.unwrap_err().code(),
        Some(ErrorCode::EditExpired)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kept_versions_earlier_edits_are_erased() {
    let t = TestServer::start_with(|c| c.edit_keep_versions = false).await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, _ae) = t.connect(&alice, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let seq = a.send_text(&c, "v1").await.unwrap().seq;
    let first = a.edit(&c, seq, "v2", vec![]).await.unwrap().event_seq;
    let second = a.edit(&c, seq, "v3", vec![]).await.unwrap().event_seq;
    let page = a
        .pull_history(&c, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    let by_seq = |s: u64| page.messages.iter().find(|m| m.seq == s).unwrap();
    assert_eq!(common::text_of(by_seq(seq)), "v3");
    assert!(by_seq(first).recalled.is_some() && by_seq(first).body.is_none());
    assert_eq!(edit_of(by_seq(second)).unwrap().text.unwrap().text, "v3");
    t.stop().await;
}
