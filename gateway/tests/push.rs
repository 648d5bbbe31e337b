//! Offline push against a stand-in for APNs and FCM on loopback (HTTP/2 over TLS,
//! checking what the real services check; see `common/push_server.rs`): one push
//! per burst to an offline device, none to an online device that acknowledges,
//! one to an online device that does not within the window, withdrawal when read
//! elsewhere, nothing for muted conversations or blocked senders, unregistered
//! tokens removed, nothing after a logout, and the queue surviving a restart.

mod common;

use std::time::{Duration, Instant};

use common::push_server::{PushServer, Received, BUNDLE, PROJECT};
use common::{http_code, TestServer, WAIT};
use courier_gateway::{Config, Server};
use courier_protocol::{pb, ConversationId, ErrorCode};
use courier_sdk::{
    Client, ClientOptions, Events, HttpClient, LoginInfo, NewGroup, PushRegistration,
};
use serde_json::Value;

// Long enough that a test's burst of sends (and a read right after a send) falls
// inside one window even on a loaded machine.
const COALESCE_MS: u64 = 1_500;
const ACK_WINDOW_MS: u64 = 3_000;

fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn fcm_token(name: &str) -> String {
    format!("fcm-{name}:APA91b-test_token")
}

async fn start(push: &PushServer) -> TestServer {
    TestServer::start_with(|c| {
        push.configure(&mut c.push);
        c.push.coalesce_ms = COALESCE_MS;
        c.push.ack_window_ms = ACK_WINDOW_MS;
    })
    .await
}

async fn device(
    server: &TestServer,
    login: &LoginInfo,
    id: &str,
    auto_ack: bool,
) -> (Client, Events) {
    let options = ClientOptions {
        device_id: id.to_owned(),
        platform: pb::Platform::Ios,
        auto_ack,
        ..ClientOptions::default()
    };
    Client::connect(server.server.tcp_addr(), &login.token, options)
        .await
        .unwrap()
}

fn apns(token: &str) -> Option<PushRegistration> {
    Some(PushRegistration {
        provider: pb::PushProvider::Apns,
        token: token.to_owned(),
        app_id: BUNDLE.into(),
        sandbox: false,
    })
}

/// Binds `id` to `login`'s user with an APNs token, then leaves it offline.
async fn offline_phone(server: &TestServer, login: &LoginInfo, id: &str, token: &str) {
    let (client, _events) = device(server, login, id, true).await;
    client.set_push_token(apns(token)).await.unwrap();
    drop(client);
    wait_offline(&server.server, login.user_id, id).await;
}

/// Polls `check` until it holds; panics with `what` after [`WAIT`]. (What is
/// awaited happens in the stand-in or behind the gateway's API, with no signal to
/// the test.)
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_offline(server: &Server, user: u64, id: &str) {
    let offline = || async { !server.api().registry.device_online(user, id) };
    until(&format!("{id} still online"), offline).await;
}

/// Waits until `/metrics` at `admin` has the line `line`.
async fn wait_metric(admin: &HttpClient, line: &str) {
    let has = || async { admin.metrics().await.unwrap().lines().any(|l| l == line) };
    until(&format!("no `{line}` in the metrics"), has).await;
}

/// The conversation a push is about (a message or a withdrawal).
fn conversation_of(r: &Received) -> String {
    let p = &r.payload;
    [
        &p["courier"]["conversation"],
        &p["courier"]["withdraw"],
        &p["data"]["conversation"],
    ]
    .iter()
    .find_map(|v| v.as_str())
    .unwrap_or_default()
    .to_owned()
}

fn about(received: &[Received], c: &ConversationId) -> Vec<Received> {
    let c = c.to_string();
    received
        .iter()
        .filter(|r| conversation_of(r) == c)
        .cloned()
        .collect()
}

/// Sends as `from` into `c` (through the admin API); returns the seq.
async fn send(admin: &HttpClient, from: u64, c: &ConversationId, text: &str) -> u64 {
    let sent = admin.admin_send(c, Some(from), text, None).await.unwrap();
    sent["seq"].as_u64().unwrap()
}

fn direct(a: u64, b: u64) -> ConversationId {
    ConversationId::direct(a, b).unwrap()
}

/// A barrier: `from` messages `target`, the push for it arrives at `token`, and
/// then no decision is pending or under way: every one queued before it is made.
async fn barrier(
    push: &PushServer,
    server: &Server,
    from: u64,
    target: u64,
    token: &str,
) -> ConversationId {
    let c = direct(from, target);
    let before = about(&push.received(token), &c).len();
    send(&admin_of(server), from, &c, "barrier").await;
    let arrived = || async { about(&push.received(token), &c).len() > before };
    until("no barrier push", arrived).await;
    let pusher = server.api().push.clone().unwrap();
    until("push decisions still under way", || async {
        pusher.settled()
    })
    .await;
    c
}

fn admin_of(server: &Server) -> HttpClient {
    HttpClient::new(format!("http://{}", server.http_addr()))
        .with_token(&server.api().config.admin_token)
}

/// A server pushing to the stand-in, with users alice, bob and carol.
async fn start_with_three(push: &PushServer) -> (TestServer, [LoginInfo; 3]) {
    let server = start(push).await;
    let users = [
        server.user("alice").await,
        server.user("bob").await,
        server.user("carol").await,
    ];
    (server, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_one_push_per_burst_with_the_unread_badge() {
    let push = PushServer::start().await;
    let (server, [alice, bob, carol]) = start_with_three(&push).await;
    let phone = apns_token(1);
    offline_phone(&server, &bob, "phone", &phone).await;
    let devices = server.http_as(&bob).devices().await.unwrap();
    assert_eq!(devices["devices"][0]["push"], "apns");

    let c = direct(alice.user_id, bob.user_id);
    // Pushes show the sender's display name when it has one.
    server
        .http_as(&alice)
        .set_display_name(Some("Alice L."))
        .await
        .unwrap();
    let admin = server.admin();
    for i in 1..=5 {
        send(&admin, alice.user_id, &c, &format!("hello {i}")).await;
    }
    let pushes = push.wait_for(&phone, 1, WAIT).await;
    barrier(&push, &server.server, carol.user_id, bob.user_id, &phone).await;
    let burst = about(&push.received(&phone), &c);
    assert_eq!(burst.len(), 1, "one push for the burst: {burst:?}");
    let p = &pushes[0];
    assert_eq!(
        (p.kind.as_str(), p.collapse_id.as_str()),
        ("alert", c.to_string().as_str())
    );
    let aps = &p.payload["aps"];
    assert_eq!(aps["alert"]["title"], "Alice L.");
    assert_eq!(aps["alert"]["body"], "hello 5 (+4 more)");
    assert_eq!(aps["badge"], 5);
    assert_eq!(p.payload["courier"]["seq"], 5);
    assert_eq!(p.payload["courier"]["count"], 5);
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    // The stand-in saw the barrier's push before the gateway had its answer.
    wait_metric(&server.admin(), "courier_push_sent_total 2").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_devices_are_pushed_only_when_they_do_not_acknowledge_in_time() {
    let push = PushServer::start().await;
    let server = start(&push).await;
    let (alice, bob) = (server.user("alice").await, server.user("bob").await);
    let (phone_token, tablet_token) = (apns_token(2), fcm_token("tablet"));
    // The phone acknowledges what it receives; the tablet never does.
    let (phone, mut phone_events) = device(&server, &bob, "phone", true).await;
    phone.set_push_token(apns(&phone_token)).await.unwrap();
    let (tablet, _tablet_events) = device(&server, &bob, "tablet", false).await;
    tablet
        .set_push_token(Some(PushRegistration {
            provider: pb::PushProvider::Fcm,
            token: tablet_token.clone(),
            app_id: PROJECT.into(),
            sandbox: false,
        }))
        .await
        .unwrap();
    let c = direct(alice.user_id, bob.user_id);
    let sent_at = Instant::now();
    send(&server.admin(), alice.user_id, &c, "are you there?").await;
    common::next_message(&mut phone_events).await;
    let pushes = push.wait_for(&tablet_token, 1, WAIT).await;
    assert!(
        pushes[0].at - sent_at >= Duration::from_millis(ACK_WINDOW_MS),
        "the tablet was pushed before its window ended"
    );
    assert_eq!(pushes[0].kind, "message");
    let data = &pushes[0].payload["data"];
    assert_eq!(
        (data["conversation"].as_str(), data["badge"].as_str()),
        (Some(c.to_string().as_str()), Some("1"))
    );
    assert_eq!(
        pushes[0].payload["android"]["notification"]["tag"],
        c.to_string()
    );
    // Both devices were decided together: the phone, which acknowledged, got none.
    assert!(push.received(&phone_token).is_empty());
    assert_eq!(push.received(&tablet_token).len(), 1);
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_elsewhere_withdraws_the_push_or_cancels_it() {
    let push = PushServer::start().await;
    let (server, [alice, bob, carol]) = start_with_three(&push).await;
    let phone = apns_token(3);
    offline_phone(&server, &bob, "phone", &phone).await;
    let (laptop, mut laptop_events) = device(&server, &bob, "laptop", true).await;
    let c = direct(alice.user_id, bob.user_id);
    let admin = server.admin();
    let seq = send(&admin, alice.user_id, &c, "lunch?").await;
    push.wait_for(&phone, 1, WAIT).await;
    common::next_message(&mut laptop_events).await;
    laptop.report_read(&c, seq).await.unwrap();
    let pushes = push.wait_for(&phone, 2, WAIT).await;
    let withdraw = &pushes[1];
    assert_eq!(withdraw.kind, "background");
    assert_eq!(withdraw.collapse_id, c.to_string());
    assert_eq!(withdraw.payload["courier"]["withdraw"], c.to_string());
    assert_eq!(withdraw.payload["courier"]["read_seq"], seq);
    assert_eq!(withdraw.payload["courier"]["badge"], 0);

    // Read before the push is due: nothing is pushed at all.
    let seq = send(&admin, alice.user_id, &c, "never mind").await;
    laptop.report_read(&c, seq).await.unwrap();
    barrier(&push, &server.server, carol.user_id, bob.user_id, &phone).await;
    assert_eq!(about(&push.received(&phone), &c).len(), 2);
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muted_conversations_and_blocked_senders_push_nothing() {
    let push = PushServer::start().await;
    let server = start(&push).await;
    let (alice, bob, carol, dave) = (
        server.user("alice").await,
        server.user("bob").await,
        server.user("dave").await,
        server.user("carol").await,
    );
    let phone = apns_token(4);
    offline_phone(&server, &bob, "phone", &phone).await;
    let (admin, b) = (server.admin(), server.http_as(&bob));
    let muted = direct(alice.user_id, bob.user_id);
    send(&admin, alice.user_id, &muted, "first").await;
    push.wait_for(&phone, 1, WAIT).await;
    b.set_conversation_flags(&muted, Some(true), None)
        .await
        .unwrap();
    send(&admin, alice.user_id, &muted, "muted now").await;

    // A group: bob blocks carol; her messages there push nothing, alice's do.
    let group = server
        .http_as(&alice)
        .create_group(&NewGroup {
            name: "Climbing".into(),
            join_policy: None,
            history_visible: None,
            members: vec![bob.user_id, carol.user_id],
        })
        .await
        .unwrap();
    let g = ConversationId::Group(group.group_id);
    b.set_block(carol.user_id, true).await.unwrap();
    send(&admin, carol.user_id, &g, "from carol").await;
    send(&admin, alice.user_id, &g, "from alice").await;
    let pushed = || async { !about(&push.received(&phone), &g).is_empty() };
    until("no group push", pushed).await;
    barrier(&push, &server.server, dave.user_id, bob.user_id, &phone).await;
    assert_eq!(
        about(&push.received(&phone), &muted).len(),
        1,
        "muted: no more"
    );
    let group_pushes = about(&push.received(&phone), &g);
    assert_eq!(group_pushes.len(), 1, "{group_pushes:?}");
    let alert = &group_pushes[0].payload["aps"]["alert"];
    assert_eq!(alert["title"], "Climbing");
    assert_eq!(alert["body"], "alice: from alice");
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_tokens_are_removed_and_logouts_end_pushes() {
    let push = PushServer::start().await;
    let (server, [alice, bob, carol]) = start_with_three(&push).await;
    let (phone, tablet) = (apns_token(5), fcm_token("tablet"));
    offline_phone(&server, &bob, "phone", &phone).await;
    let (client, _events) = device(&server, &bob, "tablet", true).await;
    drop(client);
    server
        .http_as(&bob)
        .set_push_token("tablet", "fcm", &tablet, PROJECT, false)
        .await
        .unwrap();
    wait_offline(&server.server, bob.user_id, "tablet").await;
    push.unregister(&phone);
    push.unregister(&tablet);
    let (c, admin) = (direct(alice.user_id, bob.user_id), server.admin());
    send(&admin, alice.user_id, &c, "anyone?").await;
    push.wait_for(&phone, 1, WAIT).await;
    push.wait_for(&tablet, 1, WAIT).await;
    let b = server.http_as(&bob);
    let removed = || async {
        let devices = b.devices().await.unwrap();
        let list = devices["devices"].as_array().unwrap().clone();
        list.iter().all(|d| d["push"].is_null())
    };
    until("tokens not removed", removed).await;
    wait_metric(&server.admin(), "courier_push_tokens_removed_total 2").await;

    // A new token, then a logout of the token that registered it: no more pushes.
    let fresh = apns_token(6);
    let login = server.http.login("bob", "password123").await.unwrap();
    let (client, _events) = device(&server, &login, "phone", true).await;
    client.set_push_token(apns(&fresh)).await.unwrap();
    drop(client);
    wait_offline(&server.server, bob.user_id, "phone").await;
    send(&admin, alice.user_id, &c, "still there?").await;
    push.wait_for(&fresh, 1, WAIT).await;
    server.http_as(&login).logout().await.unwrap();
    send(&admin, alice.user_id, &c, "after logout").await;
    // The barrier needs a device that still gets pushes: a third one.
    let third = apns_token(7);
    offline_phone(&server, &bob, "ipad", &third).await;
    barrier(&push, &server.server, carol.user_id, bob.user_id, &third).await;
    assert_eq!(push.received(&fresh).len(), 1, "nothing after the logout");
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_checked() {
    let push = PushServer::start().await;
    let server = start(&push).await;
    let bob = server.user("bob").await;
    let (client, _events) = device(&server, &bob, "phone", true).await;
    let b = server.http_as(&bob);
    let refused = [
        ("apns", "not-hex", BUNDLE, 400),
        ("apns", &apns_token(1), "com.other.app", 400),
        ("fcm", "token", "another-project", 400),
        ("gcm", "token", BUNDLE, 400),
        ("apns", "", BUNDLE, 400),
        ("apns", &"ab".repeat(300), BUNDLE, 400),
    ];
    for (provider, token, app, status) in refused {
        let e = b
            .set_push_token("phone", provider, token, app, false)
            .await
            .unwrap_err();
        assert_eq!(http_code(&e).0, status, "{provider} {token} {app}");
    }
    let e = b
        .set_push_token("no-such-device", "apns", &apns_token(1), BUNDLE, false)
        .await
        .unwrap_err();
    assert_eq!(http_code(&e), (404, Some(ErrorCode::NotFound)));
    // Over the binary protocol too; and unregistering.
    let e = client
        .set_push_token(Some(PushRegistration {
            provider: pb::PushProvider::Unspecified,
            token: "x".into(),
            app_id: BUNDLE.into(),
            sandbox: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    client.set_push_token(apns(&apns_token(1))).await.unwrap();
    assert_eq!(b.devices().await.unwrap()["devices"][0]["push"], "apns");
    client.set_push_token(None).await.unwrap();
    assert!(b.devices().await.unwrap()["devices"][0]["push"].is_null());
    b.remove_push_token("phone").await.unwrap();
    server.stop().await;

    // A server without push says so.
    let plain = TestServer::start().await;
    let bob = plain.user("bob").await;
    let (_client, _events) = device(&plain, &bob, "phone", true).await;
    let e = plain
        .http_as(&bob)
        .set_push_token("phone", "apns", &apns_token(1), BUNDLE, false)
        .await
        .unwrap_err();
    assert_eq!(http_code(&e), (501, Some(ErrorCode::NotImplemented)));
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_pushes_survive_a_restart_and_are_sent_once() {
    let push = PushServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |coalesce_ms: u64| {
        let mut c = Config::for_tests(dir.path());
        push.configure(&mut c.push);
        c.push.coalesce_ms = coalesce_ms;
        c
    };
    // The first server holds the push far longer than it lives.
    let server = Server::start(config(60_000)).await.unwrap();
    let http = HttpClient::new(format!("http://{}", server.http_addr()));
    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol"] {
        ids.push(http.register(name, "password123").await.unwrap().user_id);
    }
    let (alice, carol) = (ids[0], ids[2]);
    let bob = http.login("bob", "password123").await.unwrap();
    let phone = apns_token(8);
    let options = ClientOptions {
        device_id: "phone".into(),
        ..ClientOptions::default()
    };
    let (client, _events) = Client::connect(server.tcp_addr(), &bob.token, options)
        .await
        .unwrap();
    client.set_push_token(apns(&phone)).await.unwrap();
    drop(client);
    let c = direct(alice, bob.user_id);
    send(&admin_of(&server), alice, &c, "queued").await;
    server.shutdown().await;
    assert!(push.received(&phone).is_empty());

    // After a restart it goes out, once.
    let server = Server::start(config(COALESCE_MS)).await.unwrap();
    push.wait_for(&phone, 1, WAIT).await;
    barrier(&push, &server, carol, bob.user_id, &phone).await;
    server.shutdown().await;

    // And not again after another restart.
    let server = Server::start(config(COALESCE_MS)).await.unwrap();
    barrier(&push, &server, carol, bob.user_id, &phone).await;
    assert_eq!(about(&push.received(&phone), &c).len(), 1);
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_latency_from_store_to_the_apns_server() {
    // No coalescing: each message is pushed as soon as it is stored.
    let push = PushServer::start().await;
    let server = TestServer::start_with(|c| {
        push.configure(&mut c.push);
        c.push.coalesce_ms = 0;
    })
    .await;
    let (alice, bob) = (server.user("alice").await, server.user("bob").await);
    let phone = apns_token(9);
    offline_phone(&server, &bob, "phone", &phone).await;
    let c = direct(alice.user_id, bob.user_id);
    let admin = server.admin();
    let mut latencies = Vec::new();
    for i in 1..=50usize {
        // From the send's start: the store's commit is part of what is measured.
        let start = Instant::now();
        send(&admin, alice.user_id, &c, &format!("ping {i}")).await;
        let got = push.wait_for(&phone, i, WAIT).await;
        latencies.push(got[i - 1].at - start);
        // The next message only after this push: one push each.
        let seq: Value = got[i - 1].payload["courier"]["seq"].clone();
        assert_eq!(seq, i as u64);
    }
    latencies.sort();
    eprintln!(
        "push latency, send (stored) to the APNs stand-in, 50 pushes: p50 {:?}, p90 {:?}, max {:?}",
        latencies[24], latencies[44], latencies[49]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_push_again_what_was_pushed() {
    let push = PushServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = |ack_window_ms: u64| {
        let mut c = Config::for_tests(dir.path());
        push.configure(&mut c.push);
        c.push.coalesce_ms = 100;
        c.push.ack_window_ms = ack_window_ms;
        c
    };
    // Bob's tablet is online and never acknowledges: with a long window, the push
    // decision for his message stays open, and so does the queue's offset below it.
    let server = Server::start(config(60_000)).await.unwrap();
    let http = HttpClient::new(format!("http://{}", server.http_addr()));
    let mut ids = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        ids.push(http.register(name, "password123").await.unwrap().user_id);
    }
    let (alice, bob, carol, dave) = (ids[0], ids[1], ids[2], ids[3]);
    let connect = |login: LoginInfo, id: &str, auto_ack: bool| {
        let options = ClientOptions {
            device_id: id.to_owned(),
            auto_ack,
            ..ClientOptions::default()
        };
        let addr = server.tcp_addr();
        async move { Client::connect(addr, &login.token, options).await.unwrap() }
    };
    let (tablet, dave_phone) = (apns_token(10), apns_token(11));
    let (bob_tablet, _bob_events) = connect(
        http.login("bob", "password123").await.unwrap(),
        "tablet",
        false,
    )
    .await;
    bob_tablet.set_push_token(apns(&tablet)).await.unwrap();
    let (phone, _events) = connect(
        http.login("dave", "password123").await.unwrap(),
        "phone",
        true,
    )
    .await;
    phone.set_push_token(apns(&dave_phone)).await.unwrap();
    drop(phone);
    wait_offline(&server, dave, "phone").await;
    send(&admin_of(&server), alice, &direct(alice, bob), "for bob").await;
    let to_dave = direct(carol, dave);
    send(&admin_of(&server), carol, &to_dave, "for dave").await;
    push.wait_for(&dave_phone, 1, WAIT).await;
    // Its mark is in the queue once the gateway has the answer.
    wait_metric(&admin_of(&server), "courier_push_sent_total 1").await;
    assert!(push.received(&tablet).is_empty());
    drop(bob_tablet);
    server.shutdown().await;

    // After a restart both records are read again: bob's decision is made now (his
    // tablet is offline), dave's push is not sent again.
    let server = Server::start(config(500)).await.unwrap();
    push.wait_for(&tablet, 1, WAIT).await;
    barrier(&push, &server, alice, dave, &dave_phone).await;
    assert_eq!(about(&push.received(&dave_phone), &to_dave).len(), 1);
    assert!(push.violations().is_empty(), "{:?}", push.violations());
    server.shutdown().await;
}
