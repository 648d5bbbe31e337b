//! The admin API (`/v1/admin`): import users, mint tokens, send as a user or as
//! the system, notify many users, log a user or a device out, who is online; each
//! route refused without the admin token and served without one on the operator
//! listener.

mod common;

use common::{kicked, next_message, text_of, TestServer};
use courier_gateway::config::TEST_ADMIN_TOKEN;
use courier_protocol::ErrorCode;
use courier_sdk::{Client, ClientOptions};
use serde_json::{json, Value};

/// `method path` with `body` on the HTTP listener, as the admin (or with `token`).
async fn call(
    t: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    call_at(
        &format!("http://{}", t.server.http_addr()),
        token,
        method,
        path,
        body,
    )
    .await
}

async fn call_at(
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn admin(t: &TestServer, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(t, Some(TEST_ADMIN_TOKEN), method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

#[tokio::test]
async fn import_users_then_mint_a_token_that_opens_a_session() {
    let t = TestServer::start().await;
    let answer = admin(
        &t,
        "POST",
        "/v1/admin/users",
        json!({"users": [
            {"name": "amy", "password": "password123"},
            {"name": "app.ben"},
            {"name": "Not Valid"},
        ]}),
    )
    .await;
    let users = answer["users"].as_array().unwrap();
    assert_eq!(users[0]["created"], true);
    assert_eq!(users[1]["created"], true);
    assert_eq!(users[2]["error"]["name"], "invalid_argument", "{answer}");
    // Again: the vouched-for account is found, the password one is taken.
    let again = admin(
        &t,
        "POST",
        "/v1/admin/users",
        json!({"users": [
            {"name": "app.ben"}, {"name": "amy", "password": "password123"},
        ]}),
    )
    .await;
    assert_eq!(again["users"][0]["created"], false);
    assert_eq!(again["users"][0]["user_id"], users[1]["user_id"]);
    assert_eq!(again["users"][1]["error"]["name"], "already_exists");
    // Amy logs in with her password; Ben has none, but a minted token.
    t.http.login("amy", "password123").await.unwrap();
    assert!(t.http.login("app.ben", "password123").await.is_err());
    let ben = users[1]["user_id"].as_u64().unwrap();
    let minted = admin(
        &t,
        "POST",
        &format!("/v1/admin/users/{ben}/tokens"),
        Value::Null,
    )
    .await;
    assert_eq!(minted["name"], "app.ben");
    let token = minted["token"].as_str().unwrap();
    let (client, _events) = Client::connect(t.server.tcp_addr(), token, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(client.user_id(), ben);
    let (status, _) = call(
        &t,
        Some(TEST_ADMIN_TOKEN),
        "POST",
        "/v1/admin/users/12345/tokens",
        Value::Null,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn send_as_a_user_and_as_the_system() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (b, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let c = b.direct_with(alice.user_id).unwrap().to_string();

    let sent = admin(&t, "POST", "/v1/admin/messages", json!({
        "conversation": c, "from": alice.user_id, "text": "sent for alice", "client_msg_id": "op-1",
    }))
    .await;
    let m = next_message(&mut bob_events).await;
    assert_eq!(
        (m.sender, text_of(&m)),
        (alice.user_id, "sent for alice".into())
    );
    assert_eq!(sent["seq"], m.seq);
    // A retry with the same key stores nothing new.
    let retry = admin(&t, "POST", "/v1/admin/messages", json!({
        "conversation": c, "from": alice.user_id, "text": "sent for alice", "client_msg_id": "op-1",
    }))
    .await;
    assert_eq!(retry["seq"], sent["seq"]);

    admin(
        &t,
        "POST",
        "/v1/admin/messages",
        json!({"conversation": c, "text": "maintenance at noon"}),
    )
    .await;
    let m = next_message(&mut bob_events).await;
    assert_eq!((m.sender, text_of(&m)), (0, "maintenance at noon".into()));

    // A user may send only where it takes part; the system only where the
    // conversation exists.
    let carol = t.user("carol").await;
    let (status, answer) = call(
        &t,
        Some(TEST_ADMIN_TOKEN),
        "POST",
        "/v1/admin/messages",
        json!({
            "conversation": c, "from": carol.user_id, "text": "not mine",
        }),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, _) = call(
        &t,
        Some(TEST_ADMIN_TOKEN),
        "POST",
        "/v1/admin/messages",
        json!({
            "conversation": "g:999999", "text": "nobody",
        }),
    )
    .await;
    assert_eq!(status, 404);
    let history = t
        .http_as(&bob)
        .history_all(&c.parse().unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
}

#[tokio::test]
async fn a_notification_reaches_each_recipient_once_and_respects_blocks() {
    let t = TestServer::start().await;
    let news = t.user("news").await;
    let readers = common::users(&t, "reader", 4).await;
    // The last reader blocks the sender.
    t.http_as(&readers[3])
        .set_block(news.user_id, true)
        .await
        .unwrap();
    let mut ids: Vec<u64> = readers.iter().map(|r| r.user_id).collect();
    ids.push(news.user_id); // to oneself: refused
    let (r0, mut r0_events) = t.connect(&readers[0], "r0-phone").await;
    let body = json!({"from": news.user_id, "user_ids": ids, "text": "v2 is out", "notification_id": "release-2"});
    let answer = admin(&t, "POST", "/v1/admin/notifications", body.clone()).await;
    assert_eq!(answer["sent"], 3, "{answer}");
    let refused: Vec<u64> = answer["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, vec![readers[3].user_id, news.user_id]);
    let m = next_message(&mut r0_events).await;
    assert_eq!((m.sender, text_of(&m)), (news.user_id, "v2 is out".into()));
    // The same notification again stores nothing twice.
    admin(&t, "POST", "/v1/admin/notifications", body).await;
    let c = r0.direct_with(news.user_id).unwrap();
    for r in &readers[..3] {
        let history = t
            .http_as(r)
            .history_all(&c_for(r.user_id, news.user_id), 0)
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "one message for {}", r.user_id);
    }
    assert_eq!(
        t.http_as(&readers[0])
            .history_all(&c, 0)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn c_for(a: u64, b: u64) -> courier_sdk::ConversationId {
    courier_sdk::ConversationId::direct(a, b).unwrap()
}

#[tokio::test]
async fn logout_online_and_the_admin_token() {
    let t = TestServer::start_with(|c| c.admin_addr = "127.0.0.1:0".into()).await;
    let dora = t.user("dora").await;
    let (_phone, mut phone_events) = t.connect(&dora, "phone").await;
    let laptop_login = t.http.login("dora", "password123").await.unwrap();
    let (_laptop, mut laptop_events) = t.connect(&laptop_login, "laptop").await;
    let online = admin(
        &t,
        "GET",
        &format!("/v1/admin/online?users={}", dora.user_id),
        Value::Null,
    )
    .await;
    assert_eq!(online["users"][0]["devices"], 2);
    assert!(online["devices_online"].as_u64().unwrap() >= 2);

    // One device removed: its session ends, its token is revoked.
    let path = format!("/v1/admin/users/{}/devices/laptop", dora.user_id);
    let (status, _) = call(&t, Some(TEST_ADMIN_TOKEN), "DELETE", &path, Value::Null).await;
    assert_eq!(status, 204);
    assert_eq!(kicked(&mut laptop_events).await, ErrorCode::LoggedOut);
    // Everywhere: the phone too, and its token no longer works.
    let out = admin(
        &t,
        "POST",
        &format!("/v1/admin/users/{}/logout", dora.user_id),
        Value::Null,
    )
    .await;
    assert!(out["revoked"].as_u64().unwrap() >= 1);
    assert_eq!(kicked(&mut phone_events).await, ErrorCode::LoggedOut);
    assert!(t.http_as(&dora).me().await.is_err());

    // Without the admin token every route is refused; a user's token is no admin's.
    let erin = t.user("erin").await;
    for (method, path) in [
        ("POST", "/v1/admin/users".to_string()),
        ("POST", format!("/v1/admin/users/{}/tokens", erin.user_id)),
        ("POST", format!("/v1/admin/users/{}/logout", erin.user_id)),
        (
            "DELETE",
            format!("/v1/admin/users/{}/devices/x", erin.user_id),
        ),
        ("POST", "/v1/admin/messages".to_string()),
        ("POST", "/v1/admin/notifications".to_string()),
        ("GET", "/v1/admin/online".to_string()),
    ] {
        for token in [None, Some(erin.token.as_str())] {
            let (status, answer) = call(&t, token, method, &path, json!({})).await;
            assert_eq!(status, 403, "{method} {path} with {token:?}: {answer}");
        }
    }
    // On the operator listener no token is needed.
    let operator = format!("http://{}", t.server.admin_addr().unwrap());
    let (status, answer) = call_at(&operator, None, "GET", "/v1/admin/online", Value::Null).await;
    assert_eq!(status, 200, "{answer}");
    let (status, minted) = call_at(
        &operator,
        None,
        "POST",
        &format!("/v1/admin/users/{}/tokens", erin.user_id),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, minted["user_id"].as_u64()),
        (200, Some(erin.user_id))
    );
    // The OpenAPI document describes them.
    let (_, doc) = call(&t, None, "GET", "/v1/openapi.json", Value::Null).await;
    for path in [
        "/v1/admin/users",
        "/v1/admin/messages",
        "/v1/admin/notifications",
        "/v1/admin/online",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} in the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn a_banned_user_is_out_at_once_and_stays_out_until_unbanned() {
    let t = TestServer::start().await;
    let fay = t.user("fay").await;
    let (_phone, mut events) = t.connect(&fay, "phone").await;
    let ban = format!("/v1/admin/users/{}/ban", fay.user_id);
    let (status, _) = call(&t, Some(TEST_ADMIN_TOKEN), "POST", &ban, Value::Null).await;
    assert_eq!(status, 204);
    assert_eq!(kicked(&mut events).await, ErrorCode::Banned);
    // Its tokens are gone, the password opens nothing, and no new token works.
    let (status, _) = call(&t, Some(&fay.token), "GET", "/v1/me", Value::Null).await;
    assert_eq!(status, 401);
    let (status, answer) = call(
        &t,
        None,
        "POST",
        "/v1/login",
        json!({"name": "fay", "password": "password123"}),
    )
    .await;
    assert_eq!((status, answer["name"].as_str()), (403, Some("banned")));
    let mint = format!("/v1/admin/users/{}/tokens", fay.user_id);
    let (status, answer) = call(&t, Some(TEST_ADMIN_TOKEN), "POST", &mint, Value::Null).await;
    assert_eq!((status, answer["name"].as_str()), (403, Some("banned")));
    let e = Client::connect(t.server.tcp_addr(), &fay.token, ClientOptions::default())
        .await
        .err()
        .expect("a banned user opens no session");
    assert_eq!(e.code(), Some(ErrorCode::BadToken));
    // Lifted: the password works again.
    let (status, _) = call(&t, Some(TEST_ADMIN_TOKEN), "DELETE", &ban, Value::Null).await;
    assert_eq!(status, 204);
    t.http.login("fay", "password123").await.unwrap();
}

#[tokio::test]
async fn the_sdk_speaks_the_admin_api() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let imported = admin
        .admin_import_users(&[("gus", Some("password123")), ("app.hal", None)])
        .await
        .unwrap();
    let gus = imported["users"][0]["user_id"].as_u64().unwrap();
    let hal = imported["users"][1]["user_id"].as_u64().unwrap();
    let minted = admin.admin_mint_token(hal).await.unwrap();
    let (h, mut hal_events) =
        Client::connect(t.server.tcp_addr(), &minted.token, ClientOptions::default())
            .await
            .unwrap();
    let c = h.direct_with(gus).unwrap();
    admin
        .admin_send(&c, None, "welcome", Some("w-1"))
        .await
        .unwrap();
    assert_eq!(text_of(&next_message(&mut hal_events).await), "welcome");
    let notified = admin
        .admin_notify(gus, &[hal], "hello hal", None)
        .await
        .unwrap();
    assert_eq!(notified["sent"], 1);
    assert_eq!(text_of(&next_message(&mut hal_events).await), "hello hal");
    assert_eq!(
        admin.admin_online(&[hal]).await.unwrap()["users"][0]["devices"],
        1
    );
    admin.admin_ban(hal, true).await.unwrap();
    assert_eq!(kicked(&mut hal_events).await, ErrorCode::Banned);
    admin.admin_ban(hal, false).await.unwrap();
    let again = admin.admin_mint_token(hal).await.unwrap();
    let (_h2, mut events2) =
        Client::connect(t.server.tcp_addr(), &again.token, ClientOptions::default())
            .await
            .unwrap();
    assert!(admin.admin_logout(hal).await.unwrap() >= 1);
    assert_eq!(kicked(&mut events2).await, ErrorCode::LoggedOut);
}

#[tokio::test]
async fn erasing_a_user_tombstones_its_messages_and_removes_its_relations_and_devices() {
    let t = TestServer::start().await;
    let ann = t.user("ann").await;
    let bob = t.user("bob").await;
    let cid = t.user("cid").await;
    let (a, mut ann_events) = t.connect(&ann, "ann-phone").await;
    let (b, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let direct = a.direct_with(bob.user_id).unwrap();
    for text in ["ann 1", "ann 2"] {
        a.send_text(&direct, text).await.unwrap();
    }
    b.send_text(&direct, "bob 1").await.unwrap();
    let group = t
        .http_as(&ann)
        .create_group(&courier_sdk::NewGroup {
            name: "club".into(),
            members: vec![bob.user_id, cid.user_id],
            ..Default::default()
        })
        .await
        .unwrap();
    let g = courier_sdk::ConversationId::Group(group.group_id);
    a.send_text(&g, "ann in the club").await.unwrap();
    // Relations: friends with bob, following cid, followed by cid, blocking nobody.
    t.http_as(&ann).request_friend(bob.user_id).await.unwrap();
    t.http_as(&bob).accept_friend(ann.user_id).await.unwrap();
    t.http_as(&ann).set_follow(cid.user_id, true).await.unwrap();
    t.http_as(&cid).set_follow(ann.user_id, true).await.unwrap();
    while next_message(&mut bob_events).await.seq < 2 {}

    let erased = admin(
        &t,
        "POST",
        &format!("/v1/admin/users/{}/erase", ann.user_id),
        Value::Null,
    )
    .await;
    assert_eq!(erased["messages"], 3, "{erased}");
    assert_eq!(erased["relations"], 3, "{erased}");
    assert_eq!(erased["devices"], 1, "{erased}");
    assert_eq!(kicked(&mut ann_events).await, ErrorCode::LoggedOut);

    // Bob sees tombstones where ann's words were, his own untouched, in both places.
    let history = t.http_as(&bob).history_all(&direct, 0).await.unwrap();
    let by_ann: Vec<_> = history.iter().filter(|m| m.from == ann.user_id).collect();
    assert_eq!(by_ann.len(), 2);
    assert!(
        by_ann
            .iter()
            .all(|m| m.recalled.is_some() && m.text.is_none()),
        "{by_ann:?}"
    );
    assert!(history.iter().any(|m| m.text.as_deref() == Some("bob 1")));
    let club = t.http_as(&bob).history_all(&g, 0).await.unwrap();
    assert!(club
        .iter()
        .filter(|m| m.from == ann.user_id && m.body["type"] != "system")
        .all(|m| m.recalled.is_some()));
    // Relations and devices are gone; a second erase finds nothing more to do.
    assert!(!t.http_as(&bob).relation(ann.user_id).await.unwrap().friend);
    assert!(
        !t.http_as(&cid)
            .relation(ann.user_id)
            .await
            .unwrap()
            .following
    );
    let again = admin(
        &t,
        "POST",
        &format!("/v1/admin/users/{}/erase", ann.user_id),
        Value::Null,
    )
    .await;
    assert_eq!(
        (again["messages"].as_u64(), again["relations"].as_u64()),
        (Some(0), Some(0))
    );
}
