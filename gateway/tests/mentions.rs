//! Mentions against a real gateway: a per-conversation count of unread messages
//! that mention the reader (by name or `@all`) in the conversation list and in
//! sync, on every device; cleared by reading past them; `@all` only for a group's
//! owner and admins; strangers never counted.

mod common;

use common::{next_message, TestServer};
use courier_sdk::pb;
use courier_sdk::{ConversationId, ErrorCode, HttpClient, NewGroup};

/// The mention count of `c` in `http`'s conversation list.
async fn mentions_in_list(http: &HttpClient, c: &ConversationId) -> u64 {
    let list = http.conversations(None, None).await.unwrap();
    list.conversations
        .iter()
        .find(|e| e.conversation == c.to_string())
        .map_or(0, |e| e.mentions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_are_counted_per_reader_until_read() {
    let t = TestServer::start().await;
    let p = common::users(&t, "mn", 3).await;
    let (owner, member, reader) = (&p[0], &p[1], &p[2]);
    let g = t
        .http_as(owner)
        .create_group(&NewGroup {
            name: "standup".into(),
            members: vec![member.user_id, reader.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (o, _oe) = t.connect(owner, "phone").await;
    let (m, _me) = t.connect(member, "phone").await;
    let (_r, mut r_events) = t.connect(reader, "phone").await;
    let reader_http = t.http_as(reader);
    let outsider = t.user("mn-outsider").await;

    // By name (a stranger's id is dropped, not counted anywhere).
    let body = pb::MessageBody::text_mentioning(
        "@reader look",
        vec![reader.user_id, outsider.user_id],
        false,
    );
    let first = m.send(&c, body, "mention-1".into()).await.unwrap().seq;
    let delivered = next_message(&mut r_events).await;
    match delivered.body.and_then(|b| b.content) {
        Some(pb::message_body::Content::Text(t)) => assert_eq!(t.mentions, [reader.user_id]),
        other => panic!("{other:?}"),
    }
    m.send_text(&c, "no mention here").await.unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 1);
    assert_eq!(mentions_in_list(&t.http_as(owner), &c).await, 0);

    // Everyone: a member may not, the owner may.
    let all = pb::MessageBody::text_mentioning("@all standup!", vec![], true);
    assert_eq!(
        m.send(&c, all.clone(), "all-1".into())
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    o.send(&c, all.clone(), "all-2".into()).await.unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 2);
    assert_eq!(mentions_in_list(&t.http_as(member), &c).await, 1);
    // A second device learns of it from sync.
    let (r2, _r2e) = t.connect(reader, "laptop").await;
    let sync = r2
        .sync(vec![pb::Cursor {
            conversation: c.to_string(),
            seq: first - 1,
        }])
        .await
        .unwrap();
    let state = sync
        .conversations
        .iter()
        .find(|s| s.conversation == c.to_string())
        .unwrap();
    assert_eq!(state.mentions, 2);

    // Reading past the first clears it; past the rest clears them all.
    reader_http.mark_read(&c, first).await.unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 1);
    let last = t.http_as(owner).history_all(&c, 0).await.unwrap().len() as u64;
    reader_http.mark_read(&c, last).await.unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 0);
    let sync = r2.sync(vec![]).await.unwrap();
    let state = sync
        .conversations
        .iter()
        .find(|s| s.conversation == c.to_string())
        .unwrap();
    assert_eq!(state.mentions, 0);

    // An edit that adds a mention counts it; one that takes it out uncounts it
    // (the edit event itself counts for nobody).
    let plain = m.send_text(&c, "see you at ten").await.unwrap().seq;
    m.edit(&c, plain, "see you at ten, @reader", vec![reader.user_id])
        .await
        .unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 1);
    m.edit(&c, plain, "see you at ten", vec![]).await.unwrap();
    assert_eq!(mentions_in_list(&reader_http, &c).await, 0);
    // The edits are no news: one unread message, not three.
    assert_eq!(common::unread_in_list(&reader_http, &c).await, 1);

    // `@all` is for groups.
    let d = o.direct_with(reader.user_id).unwrap();
    assert_eq!(
        o.send(&d, all, "all-3".into()).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_may_mention_all_when_configured() {
    let t = TestServer::start_with(|c| c.mention_all_members = true).await;
    let p = common::users(&t, "ma", 2).await;
    let g = t
        .http_as(&p[0])
        .create_group(&NewGroup {
            name: "flat".into(),
            members: vec![p[1].user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (m, _me) = t.connect(&p[1], "phone").await;
    let all = pb::MessageBody::text_mentioning("@all lunch", vec![], true);
    m.send(&c, all, "all-1".into()).await.unwrap();
    assert_eq!(mentions_in_list(&t.http_as(&p[0]), &c).await, 1);
    t.stop().await;
}
