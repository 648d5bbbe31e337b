//! The conversation list, unread counts, read cursors across devices, flags, and the
//! OpenAPI document.

mod common;

use common::{next_text, users, TestServer, WAIT};
use courier_sdk::{ConversationId, Event, NewGroup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_unread_and_read_cursors_across_two_devices() {
    let t = TestServer::start().await;
    let p = users(&t, "c", 3).await;
    let (alice, bob, carol) = (&p[0], &p[1], &p[2]);
    let group = t
        .http_as(carol)
        .create_group(&NewGroup {
            name: "trio".into(),
            members: vec![alice.user_id, bob.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let g = ConversationId::Group(group.group_id);
    let (a, _ae) = t.connect(alice, "alice-phone").await;
    let (b1, mut b1_events) = t.connect(bob, "bob-phone").await;
    let (_b2, mut b2_events) = t.connect(bob, "bob-laptop").await;
    let d = a.direct_with(bob.user_id).unwrap();

    for n in 0..2 {
        a.send_text(&g, format!("group {n}")).await.unwrap();
    }
    for n in 0..3 {
        a.send_text(&d, format!("direct {n}")).await.unwrap();
    }
    // Bob replies once in the group: his own message does not count as unread, and
    // replying marks what came before as read.
    b1.send_text(&g, "bob in group").await.unwrap();
    a.send_text(&g, "group 2").await.unwrap();

    let bob_http = t.http_as(bob);
    let list = bob_http
        .conversations(None, None)
        .await
        .unwrap()
        .conversations;
    assert_eq!(list.len(), 2);
    // Most recent activity first: the group's last message came last.
    assert_eq!(list[0].conversation, g.to_string());
    assert_eq!(list[0].name.as_deref(), Some("trio"));
    assert_eq!(list[0].unread, 1);
    assert_eq!(
        list[0].last_message.as_ref().unwrap().text.as_deref(),
        Some("group 2")
    );
    assert_eq!(list[1].conversation, d.to_string());
    assert_eq!((list[1].peer, list[1].unread), (Some(alice.user_id), 3));
    assert_eq!(list[1].name.as_deref(), Some("c0"));
    // Alice's own messages are not unread for her.
    let alice_list = t
        .http_as(alice)
        .conversations(None, None)
        .await
        .unwrap()
        .conversations;
    assert!(
        alice_list
            .iter()
            .find(|c| c.conversation == d.to_string())
            .unwrap()
            .unread
            == 0
    );

    // Bob reads the direct conversation up to seq 2 on his phone (binary protocol):
    // the laptop is told, the phone is not.
    while next_text(&mut b2_events).await.body.unwrap().as_text() != Some("group 2") {}
    b1.report_read(&d, 2).await.unwrap();
    let receipt = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::ReadReceipt(r)) = b2_events.next().await {
                return r;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        (receipt.conversation.as_str(), receipt.reader, receipt.seq),
        (&*d.to_string(), bob.user_id, 2)
    );
    let list = bob_http
        .conversations(None, None)
        .await
        .unwrap()
        .conversations;
    assert_eq!(
        list.iter()
            .find(|c| c.conversation == d.to_string())
            .unwrap()
            .unread,
        1
    );
    // Over HTTP the cursor only moves forward, and every device of Bob's hears of it.
    assert_eq!(bob_http.mark_read(&d, 1).await.unwrap(), 2);
    assert_eq!(bob_http.mark_read(&d, 3).await.unwrap(), 3);
    let on_phone = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::ReadReceipt(r)) = b1_events.next().await {
                if r.seq == 3 {
                    return r;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(on_phone.conversation, d.to_string());

    // Pinning moves a conversation to the top; muting is kept.
    bob_http
        .set_conversation_flags(&d, Some(true), Some(true))
        .await
        .unwrap();
    let list = bob_http
        .conversations(None, None)
        .await
        .unwrap()
        .conversations;
    assert_eq!(list[0].conversation, d.to_string());
    assert!(list[0].pinned && list[0].muted && list[0].unread == 0);

    // Paging: one per page, the cursor carries on.
    let first = bob_http.conversations(None, Some(1)).await.unwrap();
    assert_eq!(first.conversations.len(), 1);
    let second = bob_http
        .conversations(first.next_cursor.as_deref(), Some(1))
        .await
        .unwrap();
    assert_eq!(second.conversations.len(), 1);
    assert_ne!(
        first.conversations[0].conversation,
        second.conversations[0].conversation
    );
    assert!(second.next_cursor.is_none());
    t.stop().await;
}

/// Every route in the OpenAPI document exists (the routes are registered from the same
/// annotated handlers, so every route is in the document by construction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let t = TestServer::start().await;
    let doc = t.http.openapi().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths documented", paths.len());
    let client = reqwest_like();
    let base = format!("http://{}", t.server.http_addr());
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "nobody")
            .replace("{user_id}", "1")
            .replace("{group_id}", "1")
            .replace("{id}", "d:1:2");
        for method in item.as_object().unwrap().keys() {
            let status_and_body = client(&base, method, &concrete).await;
            // The fallback answers unknown routes with this exact message.
            assert!(
                !status_and_body.contains("no such route"),
                "{method} {path} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} operations checked");
    for must in [
        "/v1/register",
        "/v1/groups/{group_id}/members",
        "/v1/conversations/{id}/read",
        "/v1/friends/requests",
    ] {
        assert!(paths.contains_key(must), "{must} is not documented");
    }
    t.stop().await;
}

/// A tiny raw HTTP client for any method, returning the status line and body.
fn reqwest_like(
) -> impl Fn(&str, &str, &str) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
{
    |base: &str, method: &str, path: &str| {
        let addr = base.trim_start_matches("http://").to_owned();
        let request = format!(
            "{} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
            method.to_ascii_uppercase()
        );
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        })
    }
}
