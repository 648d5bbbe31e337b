//! Abuse resistance and session safety, tried as an attacker would against a real
//! gateway on loopback: floods of logins and messages, slow and silent peers, stolen
//! or stale credentials, blocked users, strangers, sender-written media metadata,
//! connections past the budget, and input that should never be stored.
//!
//! These tests run with the embedded defaults that matter here (rate limits on,
//! invitations for group adds) unless a test says otherwise.

mod common;

use std::time::{Duration, Instant};

use common::{
    error_code, hello_frame, http_code, kicked, next_message, users, RawConn, TestServer, WAIT,
};
use courier_gateway::config::{GroupAddPolicy, Switch};
use courier_gateway::Config;
use courier_protocol::pb::{self, frame::Kind};
use courier_protocol::{encode_frame, PROTOCOL_VERSION};
use courier_sdk::{ConversationId, ErrorCode, Event, NewGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The defaults `Config::for_tests` relaxes for the other suites, restored.
fn defaults(c: &mut Config) {
    c.rate_limits = Switch::On;
    c.group_add_policy = GroupAddPolicy::Invite;
}

async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        defaults(c);
        tweak(c);
    })
    .await
}

/// Waits until `check` holds, polling (for server-side state that has no signal).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// Password guessing and registration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_answered_rate_limited_even_for_the_right_password() {
    let t = start(|c| c.login_free_failures = 3).await;
    t.http.register("alice", "password123").await.unwrap();
    for _ in 0..3 {
        let e = t.http.login("alice", "wrong-guess").await.unwrap_err();
        assert_eq!(http_code(&e), (401, Some(ErrorCode::BadCredentials)));
    }
    // The fourth failure locks the account for a second, then two, ...
    let e = t.http.login("alice", "wrong-guess").await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadCredentials)));
    let locked_at = Instant::now();
    let e = t.http.login("alice", "password123").await.unwrap_err();
    assert_eq!(
        http_code(&e),
        (429, Some(ErrorCode::RateLimited)),
        "the right password must wait out the lock too"
    );
    // Other accounts are not locked by alice's attacker.
    t.http.register("bob", "password123").await.unwrap();
    t.http.login("bob", "password123").await.unwrap();
    // Once the lock is over, the right password works and clears the failures.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(locked_at.elapsed())).await;
    t.http.login("alice", "password123").await.unwrap();
    t.http.login("alice", "password123").await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_limited_per_address_and_says_when_to_retry() {
    let t = start(|c| c.rate_registrations_per_address_per_hour = 3).await;
    for i in 0..3 {
        t.http
            .register(&format!("u{i}"), "password123")
            .await
            .unwrap();
    }
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/register", t.server.http_addr()))
        .json(&serde_json::json!({"name": "u3", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_limited_per_user() {
    let t = start(|c| c.rate_http_per_user_per_minute = 5).await;
    let alice = t.user("alice").await;
    let http = t.http_as(&alice);
    for _ in 0..5 {
        http.me().await.unwrap();
    }
    let e = http.me().await.unwrap_err();
    assert_eq!(http_code(&e), (429, Some(ErrorCode::RateLimited)));
    // Another user is not affected.
    let bob = t.user("bob").await;
    t.http_as(&bob).me().await.unwrap();
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Message floods

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_flood_is_limited_while_a_friends_chat_is_not() {
    let t = start(|c| c.rate_stranger_sends_per_minute = 10).await;
    let p = users(&t, "s", 3).await;
    let (alice, bob, mallory) = (&p[0], &p[1], &p[2]);
    t.http_as(alice).request_friend(bob.user_id).await.unwrap();
    t.http_as(bob).accept_friend(alice.user_id).await.unwrap();
    let (m, _me) = t.connect(mallory, "mallory").await;
    let (b, _be) = t.connect(bob, "bob").await;
    let (a, mut ae) = t.connect(alice, "alice").await;

    // Mallory floods alice, whom she does not know.
    let to_alice = m.direct_with(alice.user_id).unwrap();
    let started = Instant::now();
    let mut stored = 0;
    let refusal = loop {
        match m.send_text(&to_alice, format!("buy now {stored}")).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(
            stored <= 1000,
            "a stranger stored {stored} messages unhindered"
        );
    };
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(refusal.code(), Some(ErrorCode::RateLimited), "{refusal:?}");
    // Ten at once (an eleventh if the test took over six seconds to get here).
    assert!(
        (10..=11).contains(&stored),
        "the stranger budget is 10 per minute, {stored} were stored"
    );
    println!(
        "stranger stored {stored} messages in {secs:.3} s before RATE_LIMITED (then 10 per minute)"
    );

    // Bob, a friend, chats at once and at length.
    let bob_to_alice = b.direct_with(alice.user_id).unwrap();
    for i in 0..100 {
        b.send_text(&bob_to_alice, format!("hi {i}")).await.unwrap();
    }
    let mut from_bob = 0;
    while from_bob < 100 {
        if next_message(&mut ae).await.sender == bob.user_id {
            from_bob += 1;
        }
    }

    // Once alice answers mallory, the conversation is no longer a stranger's.
    a.send_text(&to_alice, "who are you?").await.unwrap();
    for i in 0..20 {
        m.send_text(&to_alice, format!("sorry {i}")).await.unwrap();
    }
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Slow and silent peers

/// Reads until the server closes the connection; how long that took.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_http_client_is_closed_within_the_header_timeout() {
    let t = start(|c| {
        c.http_header_timeout_ms = 1_000;
        c.http_idle_timeout_ms = 1_000;
        c.http_request_timeout_ms = 1_000;
    })
    .await;
    let addr = t.server.http_addr();

    // Headers trickling in, a byte every 200 ms: closed once the header time is up.
    let slow = TcpStream::connect(addr).await.unwrap();
    let (mut slow_reader, mut slow_writer) = slow.into_split();
    slow_writer
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Once the server has closed, writes fail: stop.
            if slow_writer.write_all(b"X").await.is_err() {
                break;
            }
        }
    });
    let took = closed_within(&mut slow_reader, Duration::from_secs(5)).await;
    trickle.abort();
    println!("slowloris header connection closed after {took:?}");
    assert!(took <= Duration::from_millis(2_500), "{took:?}");

    // A body announced and never sent: abandoned.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let took = closed_within(&mut stalled, Duration::from_secs(5)).await;
    println!("stalled body connection closed after {took:?}");
    assert!(took <= Duration::from_millis(2_500), "{took:?}");

    // An idle keep-alive connection after a complete request: closed.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    println!("idle keep-alive connection closed after {took:?}");
    assert!(took <= Duration::from_millis(2_500), "{took:?}");

    // Meanwhile the API answers everyone else.
    t.http.register("alice", "password123").await.unwrap();
    t.stop().await;
}

/// A client that stops reading (a tiny receive window, and never a read) while
/// messages pour in: its session is closed as a slow consumer within the write
/// timeout, its place in the budget freed, and shutdown does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_and_shutdown_does_not_wait_for_it() {
    let t = start(|c| {
        c.rate_limits = Switch::Off;
        c.heartbeat_interval_ms = 1_000;
        c.idle_timeout_ms = 3_000;
        c.write_timeout_ms = 2_000;
        c.max_text_bytes = 16 * 1024;
    })
    .await;
    let p = users(&t, "r", 2).await;
    let (victim, bob) = (&p[0], &p[1]);
    let api = t.server.api().clone();
    let connections_before = api.connections.open();

    let stuck = non_reading_peer(&t, &victim.token, "stuck").await;
    eventually("the peer is online", || {
        api.registry.devices_of(victim.user_id) == 1
    })
    .await;
    let (b, _be) = t.connect(bob, "bob").await;
    let c = b.direct_with(victim.user_id).unwrap();
    let big = "x".repeat(15 * 1024);
    let started = Instant::now();
    // Enough to fill both socket buffers and the outbound queue many times over.
    for i in 0..400 {
        let id = format!("flood-{device}-{i}", device = "a");
        drop(
            b.submit_send(&c, pb::MessageBody::text(&big), id)
                .await
                .unwrap(),
        );
    }
    eventually("the stuck session is closed", || {
        api.registry.devices_of(victim.user_id) == 0
    })
    .await;
    let took = started.elapsed();
    println!("non-reading peer closed {took:?} after the flood began");
    assert!(
        took <= Duration::from_millis(3_000 + 1_500),
        "closed after {took:?}, past the idle timeout"
    );
    // Its connection's place in the budget (and so its descriptor) is given back.
    eventually("the connection is released", || {
        api.connections.open() <= connections_before + 2
    })
    .await;
    drop(stuck);

    // Another one gets stuck; shutdown still ends within the grace period.
    let _stuck = non_reading_peer(&t, &victim.token, "stuck-2").await;
    for i in 0..400 {
        let id = format!("flood-b-{i}");
        drop(
            b.submit_send(&c, pb::MessageBody::text(&big), id)
                .await
                .unwrap(),
        );
    }
    let grace = api.config.shutdown_grace();
    let started = Instant::now();
    t.stop().await;
    let took = started.elapsed();
    println!("shutdown with a stuck peer took {took:?} (grace {grace:?})");
    assert!(took <= grace + Duration::from_secs(1), "{took:?}");
}

/// A raw connection with a 4 KiB receive buffer that logs in and never reads again.
async fn non_reading_peer(t: &TestServer, token: &str, device: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(t.server.tcp_addr()).await.unwrap();
    let mut hello = hello_frame(token, PROTOCOL_VERSION);
    if let Some(Kind::Hello(h)) = hello.kind.as_mut() {
        h.device_id = device.into();
    }
    stream.write_all(&encode_frame(&hello)).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_budget_are_answered_overloaded_at_once() {
    let t = start(|c| c.max_connections = 3).await;
    // Three connections that never say Hello hold the whole budget.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(t.server.tcp_addr()).await.unwrap());
    }
    let api = t.server.api().clone();
    eventually("three connections admitted", || api.connections.open() == 3).await;
    let mut fourth = RawConn::connect(t.server.tcp_addr()).await;
    let started = Instant::now();
    let answer = fourth.recv().await.expect("an answer, not a hang");
    assert_eq!(error_code(&answer), Some(ErrorCode::Overloaded));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(fourth.recv().await.is_none(), "and then closed");
    // HTTP shares the budget: 503 with Retry-After, answered before any request.
    let mut http = TcpStream::connect(t.server.http_addr()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, http.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("Retry-After: 1"), "{response}");
    assert!(api.connections.refused() >= 2);
    drop(held);
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Credentials that end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_logout_everywhere_and_a_password_change_end_live_sessions() {
    let t = start(|_| {}).await;
    t.http.register("alice", "password123").await.unwrap();
    let login = || async { t.http.login("alice", "password123").await.unwrap() };

    // Logout ends the sessions of that token, and the token is dead.
    let phone = login().await;
    let laptop = login().await;
    let (_p, mut pe) = t.connect(&phone, "phone").await;
    let (l, _le) = t.connect(&laptop, "laptop").await;
    t.http_as(&phone).logout().await.unwrap();
    assert_eq!(kicked(&mut pe).await, ErrorCode::LoggedOut);
    let e = courier_sdk::Client::connect(t.server.tcp_addr(), &phone.token, Default::default())
        .await
        .err()
        .expect("a revoked token cannot log in");
    assert_eq!(e.code(), Some(ErrorCode::BadToken));
    // The laptop's session, on another token, goes on.
    l.sync(Vec::new()).await.unwrap();
    t.http_as(&laptop).me().await.unwrap();

    // A password change ends every other token's sessions; the caller's stays.
    let tablet = login().await;
    let (_t, mut te) = t.connect(&tablet, "tablet").await;
    let (_l2, mut le2) = t.connect(&laptop, "laptop").await;
    t.http_as(&laptop)
        .change_password("password123", "new-password-456")
        .await
        .unwrap();
    assert_eq!(kicked(&mut te).await, ErrorCode::LoggedOut);
    t.http_as(&laptop).me().await.unwrap();
    let e = t.http_as(&tablet).me().await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadToken)));
    let e = t.http.login("alice", "password123").await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadCredentials)));
    let fresh = t.http.login("alice", "new-password-456").await.unwrap();

    // Log out everywhere: every session, every token.
    let (_f, mut fe) = t.connect(&fresh, "fresh").await;
    let revoked = t.http_as(&fresh).logout_everywhere().await.unwrap();
    assert!(revoked >= 2, "{revoked}");
    assert_eq!(kicked(&mut fe).await, ErrorCode::LoggedOut);
    assert_eq!(kicked(&mut le2).await, ErrorCode::LoggedOut);
    for token in [&laptop, &fresh] {
        let e = t.http_as(token).me().await.unwrap_err();
        assert_eq!(http_code(&e), (401, Some(ErrorCode::BadToken)));
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_ends_its_session() {
    let t = start(|c| c.token_ttl_secs = 2).await;
    let alice = t.user("alice").await;
    let (_a, mut ae) = t.connect(&alice, "phone").await;
    let started = Instant::now();
    assert_eq!(kicked(&mut ae).await, ErrorCode::LoggedOut);
    let left = Duration::from_millis(
        alice
            .expires_at_ms
            .saturating_sub(courier_storage::now_ms()),
    );
    println!(
        "session ended {:?} after connecting ({left:?} before the expiry)",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_locked_out() {
    let t = start(|_| {}).await;
    t.http.register("alice", "password123").await.unwrap();
    let phone = t.http.login("alice", "password123").await.unwrap();
    let laptop = t.http.login("alice", "password123").await.unwrap();
    let (_p, mut pe) = t.connect(&phone, "lost-phone").await;
    let (_l, _le) = t.connect(&laptop, "laptop").await;
    t.http_as(&laptop)
        .remove_device("lost-phone")
        .await
        .unwrap();
    assert_eq!(kicked(&mut pe).await, ErrorCode::LoggedOut);
    // The phone's token is dead on both protocols, under its old device id or any.
    for device in ["lost-phone", "another-id"] {
        let options = courier_sdk::ClientOptions {
            device_id: device.into(),
            ..Default::default()
        };
        let e = courier_sdk::Client::connect(t.server.tcp_addr(), &phone.token, options)
            .await
            .err()
            .expect("the removed device cannot reconnect");
        assert_eq!(e.code(), Some(ErrorCode::BadToken));
    }
    let e = t.http_as(&phone).me().await.unwrap_err();
    assert_eq!(http_code(&e), (401, Some(ErrorCode::BadToken)));
    // The laptop is untouched.
    t.http_as(&laptop).me().await.unwrap();
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Blocks and consent

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_of_a_blocked_user_is_refused() {
    let t = start(|_| {}).await;
    let p = users(&t, "b", 3).await;
    let (alice, mallory, carol) = (&p[0], &p[1], &p[2]);
    let (ah, mh) = (t.http_as(alice), t.http_as(mallory));
    // Mallory and alice share a group (made before the block, by carol, consented).
    let group = t
        .http_as(carol)
        .create_group(&NewGroup {
            name: "club".into(),
            join_policy: Some("open".into()),
            ..NewGroup::default()
        })
        .await
        .unwrap();
    ah.join_group(group.group_id).await.unwrap();
    mh.join_group(group.group_id).await.unwrap();
    let (m, _me) = t.connect(mallory, "m").await;
    let (_a, mut ae) = t.connect(alice, "a").await;
    let direct = m.direct_with(alice.user_id).unwrap();
    m.send_text(&direct, "hello before").await.unwrap();
    ah.mark_read(&direct, 1).await.unwrap();
    assert_eq!(mh.reads(&direct, 1).await.unwrap()["count"], 1);

    ah.set_block(mallory.user_id, true).await.unwrap();

    // 1:1 messages.
    let e = m.send_text(&direct, "hello after").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked));
    // Friend requests and follows.
    let e = mh.request_friend(alice.user_id).await.unwrap_err();
    assert_eq!(http_code(&e).1, Some(ErrorCode::Blocked));
    let e = mh.set_follow(alice.user_id, true).await.unwrap_err();
    assert_eq!(http_code(&e).1, Some(ErrorCode::Blocked));
    // Groups: mallory cannot add or invite alice anywhere.
    let mine = mh
        .create_group(&NewGroup {
            name: "trap".into(),
            members: vec![alice.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.member_count, 1);
    let added = mh
        .add_members(mine.group_id, &[alice.user_id])
        .await
        .unwrap();
    assert_eq!(added.refused, vec![alice.user_id]);
    assert!(added.added.is_empty() && added.invited.is_empty());
    assert!(ah.invitations().await.unwrap()["invitations"]
        .as_array()
        .unwrap()
        .is_empty());
    // Presence: not shown, whatever the relation was.
    let seen = mh.presence(&[alice.user_id]).await.unwrap();
    assert!(seen["users"].as_array().unwrap().is_empty(), "{seen}");
    // Mentions in a shared group: the server drops the mention of alice.
    let g = ConversationId::Group(group.group_id);
    let body = pb::MessageBody {
        content: Some(pb::message_body::Content::Text(pb::Text {
            text: "@alice look".into(),
            mentions: vec![alice.user_id, carol.user_id],
            mention_all: false,
        })),
    };
    m.send(&g, body, "mention-1".into()).await.unwrap();
    let got = loop {
        let msg = next_message(&mut ae).await;
        if msg.conversation == g.to_string() {
            break msg;
        }
    };
    match got.body.unwrap().content {
        Some(pb::message_body::Content::Text(t)) => {
            assert_eq!(t.mentions, vec![carol.user_id]);
        }
        other => panic!("{other:?}"),
    }
    // Read receipts: what alice read is no longer shown to mallory.
    let reads = mh.reads(&direct, 1).await.unwrap();
    assert_eq!(reads["count"], 0, "{reads}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_someone_to_a_group_needs_their_consent() {
    let t = start(|_| {}).await;
    let p = users(&t, "g", 3).await;
    let (alice, bob, carol) = (&p[0], &p[1], &p[2]);
    let (ah, bh) = (t.http_as(alice), t.http_as(bob));
    let group = ah
        .create_group(&NewGroup {
            name: "crew".into(),
            members: vec![bob.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap();
    // Bob is invited, not added: he neither sees nor receives the group yet.
    assert_eq!(group.member_count, 1);
    let g = ConversationId::Group(group.group_id);
    let e = bh.history(&g, Default::default()).await.unwrap_err();
    assert_eq!(http_code(&e).0, 403);
    let invitations = bh.invitations().await.unwrap();
    assert_eq!(
        invitations["invitations"][0]["group_id"], group.group_id,
        "{invitations}"
    );
    assert_eq!(invitations["invitations"][0]["inviter"], alice.user_id);
    // Carol blocks alice: she is never added or invited.
    t.http_as(carol)
        .set_block(alice.user_id, true)
        .await
        .unwrap();
    let added = ah
        .add_members(group.group_id, &[carol.user_id])
        .await
        .unwrap();
    assert_eq!(added.refused, vec![carol.user_id]);
    // Bob accepts: now a member.
    let joined = bh.accept_invitation(group.group_id).await.unwrap();
    assert_eq!(joined.member_count, 2);
    bh.history(&g, Default::default()).await.unwrap();
    // A declined invitation is gone.
    let other = ah
        .create_group(&NewGroup {
            name: "other".into(),
            members: vec![bob.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap();
    bh.decline_invitation(other.group_id).await.unwrap();
    let e = bh.accept_invitation(other.group_id).await.unwrap_err();
    assert_eq!(http_code(&e).1, Some(ErrorCode::NotFound));
    t.stop().await;

    // `friends`: the adder's friends join at once, others are invited.
    let t = start(|c| c.group_add_policy = GroupAddPolicy::Friends).await;
    let p = users(&t, "f", 3).await;
    let (alice, friend, stranger) = (&p[0], &p[1], &p[2]);
    t.http_as(alice)
        .request_friend(friend.user_id)
        .await
        .unwrap();
    t.http_as(friend)
        .accept_friend(alice.user_id)
        .await
        .unwrap();
    let group = t
        .http_as(alice)
        .create_group(&NewGroup {
            name: "mixed".into(),
            ..NewGroup::default()
        })
        .await
        .unwrap();
    let added = t
        .http_as(alice)
        .add_members(group.group_id, &[friend.user_id, stranger.user_id])
        .await
        .unwrap();
    assert_eq!(added.added, vec![friend.user_id]);
    assert_eq!(added.invited, vec![stranger.user_id]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_hidden_from_strangers_and_subscriptions_are_bounded() {
    let t = start(|c| c.rate_limits = Switch::Off).await;
    let p = users(&t, "p", 3).await;
    let (alice, bob, mallory) = (&p[0], &p[1], &p[2]);
    t.http_as(alice).request_friend(bob.user_id).await.unwrap();
    t.http_as(bob).accept_friend(alice.user_id).await.unwrap();
    let (_a, _ae) = t.connect(alice, "a").await;
    // Query: the friend sees alice online, the stranger sees nothing at all.
    let seen = t.http_as(bob).presence(&[alice.user_id]).await.unwrap();
    assert_eq!(seen["users"][0]["online"], true, "{seen}");
    let seen = t.http_as(mallory).presence(&[alice.user_id]).await.unwrap();
    assert!(seen["users"].as_array().unwrap().is_empty(), "{seen}");
    // Subscription: the friend is told at once, the stranger never.
    let (b, mut be) = t.connect(bob, "b").await;
    let (m, mut me) = t.connect(mallory, "m").await;
    b.subscribe_presence(vec![alice.user_id], Duration::from_secs(60))
        .await
        .unwrap();
    m.subscribe_presence(vec![alice.user_id], Duration::from_secs(60))
        .await
        .unwrap();
    let told = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Presence(batch)) = be.next().await {
                if batch.changes.iter().any(|c| c.user_id == alice.user_id) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(told.is_ok(), "the friend was not told");
    // By the time the friend's answer arrived, the stranger's (same window) would
    // have too: nothing came.
    while let Some(event) = me.try_next() {
        assert!(
            !matches!(event, Event::Presence(_)),
            "the stranger got {event:?}"
        );
    }

    // One user can watch at most 1,000 users at once.
    let api = t.server.api().clone();
    let many: Vec<u64> = (0..1_200u64).map(|i| 1_000_000 + i).collect();
    api.import_friendships(bob.user_id, many.clone())
        .await
        .unwrap();
    for chunk in many.chunks(240) {
        b.subscribe_presence(chunk.to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
    }
    eventually("the subscriptions past the bound are refused", || {
        api.presence.counters.snapshot().subscriptions_refused >= 200
    })
    .await;
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Media metadata and downloads

fn png(extra: &[u8]) -> Vec<u8> {
    // A 3x2 PNG header is enough for sniffing and dimensions.
    let mut bytes = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0,
        0, 3, 0, 0, 0, 2, 8, 6, 0, 0, 0, 0, 0, 0, 0,
    ];
    bytes.extend_from_slice(extra);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_metadata_is_the_servers_and_downloads_are_inert() {
    let t = start(|c| c.rate_limits = Switch::Off).await;
    let p = users(&t, "md", 3).await;
    let (alice, bob, eve) = (&p[0], &p[1], &p[2]);
    let photo = t.http_as(alice).upload_bytes(png(b"pic")).await.unwrap();
    let (a, _ae) = t.connect(alice, "a").await;
    let (_b, mut be) = t.connect(bob, "b").await;
    let c = a.direct_with(bob.user_id).unwrap();
    // Alice lies about everything she can.
    let forged = pb::MessageBody {
        content: Some(pb::message_body::Content::Media(pb::Media {
            kind: pb::MediaKind::File as i32,
            url: "javascript:alert(document.cookie)".into(),
            mime: "text/html".into(),
            size: 1,
            sha256: photo.sha256.clone(),
            width: 9999,
            height: 9999,
            duration_ms: 0,
            thumbnail: Some(pb::Thumbnail {
                url: "https://evil.example/t.png".into(),
                mime: "image/png".into(),
                size: 1,
                width: 1,
                height: 1,
                sha256: String::new(),
            }),
            name: "holiday.png".into(),
            custom_kind: String::new(),
            caption: "look".into(),
        })),
    };
    let receipt = a.send(&c, forged, "forged-1".into()).await.unwrap();
    let got = next_message(&mut be).await;
    let Some(pb::message_body::Content::Media(m)) = got.body.unwrap().content else {
        panic!("not media");
    };
    assert!(
        m.url
            .starts_with(&format!("/v1/media/{}?exp=", photo.sha256)),
        "{}",
        m.url
    );
    assert_eq!(
        (m.mime.as_str(), m.size, m.width, m.height),
        ("image/png", photo.size, 3, 2)
    );
    assert_eq!(m.kind, pb::MediaKind::Image as i32);
    assert!(
        m.thumbnail.is_none(),
        "a thumbnail that is not an upload is dropped"
    );
    assert_eq!(
        (m.name.as_str(), m.caption.as_str()),
        ("holiday.png", "look")
    );
    // History says the same.
    let page = t
        .http_as(bob)
        .history(&c, Default::default())
        .await
        .unwrap();
    assert_eq!(page.messages[0].body["url"].as_str(), Some(m.url.as_str()));

    // Downloads are never sniffed into a page, and only media shows inline.
    let response = reqwest::get(format!("http://{}{}", t.server.http_addr(), m.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-disposition"], "inline");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(&[0; 60]);
    let archive = t.http_as(alice).upload_bytes(zip).await.unwrap();
    let response = reqwest::get(format!("http://{}{}", t.server.http_addr(), archive.url))
        .await
        .unwrap();
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));

    // The recipient renews the link through the message; a stranger cannot.
    let renewed = t
        .http_as(bob)
        .media_url(&photo.sha256, Some((&c, receipt.seq)))
        .await
        .unwrap();
    assert!(renewed.url.starts_with("/v1/media/"));
    let e = t
        .http_as(eve)
        .media_url(&photo.sha256, Some((&c, receipt.seq)))
        .await
        .unwrap_err();
    assert_eq!(http_code(&e).0, 403);
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Input hygiene

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_ids_refuse_controls_and_overrides() {
    let t = start(|_| {}).await;
    let alice = t.user("alice").await;
    for device in ["phone\n", "ph\u{202E}one", "\u{1b}[2J"] {
        let mut raw = t.raw().await;
        let mut hello = hello_frame(&alice.token, PROTOCOL_VERSION);
        if let Some(Kind::Hello(h)) = hello.kind.as_mut() {
            h.device_id = device.into();
        }
        raw.send(&hello).await;
        let answer = raw.recv().await.unwrap();
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::InvalidArgument),
            "{device:?}"
        );
    }
    let (a, _ae) = t.connect(&alice, "phone").await;
    let bob = t.user("bob").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let e = a
        .send(
            &c,
            pb::MessageBody::text("hi"),
            "id\r\nX-Injected: 1".into(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    for name in ["crew\u{202E}gpj.exe", "line\nbreak", "   "] {
        let e = t
            .http_as(&alice)
            .create_group(&NewGroup {
                name: name.into(),
                ..NewGroup::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            http_code(&e),
            (400, Some(ErrorCode::InvalidArgument)),
            "{name:?}"
        );
    }
    t.stop().await;
}

/// Every Deliver fits the frame size the server advertises: a body that would not
/// fit once wrapped is refused when it is sent (and the session goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_frames_fit_the_advertised_maximum() {
    let t = start(|c| {
        c.rate_limits = Switch::Off;
        c.max_frame_bytes = 8 * 1024;
        c.max_text_bytes = 4 * 1024;
    })
    .await;
    let p = users(&t, "f", 2).await;
    let (a, _ae) = t.connect(&p[0], "a").await;
    let max = a.welcome().max_frame_bytes as usize;
    // The receiver reads with exactly the advertised maximum.
    let mut raw = RawConn::connect(t.server.tcp_addr()).await;
    raw.limit(max);
    let mut hello = hello_frame(&p[1].token, PROTOCOL_VERSION);
    if let Some(Kind::Hello(h)) = hello.kind.as_mut() {
        h.device_id = "raw-receiver".into();
    }
    raw.send(&hello).await;
    assert!(matches!(
        raw.recv().await.unwrap().kind,
        Some(Kind::Welcome(_))
    ));
    let c = a.direct_with(p[1].user_id).unwrap();
    // A custom body as large as a Send frame allows: refused, it could not be
    // delivered.
    let mut big = pb::MessageBody {
        content: Some(pb::message_body::Content::Custom(pb::Custom {
            r#type: "blob".into(),
            data: vec![7; max - 200].into(),
        })),
    };
    let e = a.send(&c, big.clone(), "big-1".into()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FrameTooLarge));
    // The largest body that fits is delivered, within the limit.
    if let Some(pb::message_body::Content::Custom(custom)) = big.content.as_mut() {
        custom.data.truncate(max - 520 - 16);
    }
    a.send(&c, big, "big-2".into()).await.unwrap();
    loop {
        let frame = raw.recv().await.expect("the Deliver, within the limit");
        if let Some(Kind::Deliver(_)) = frame.kind {
            break;
        }
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_files_of_interrupted_uploads_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join("media-tmp");
    std::fs::create_dir_all(&temp).unwrap();
    std::fs::write(temp.join("7-crashed-upload"), vec![0u8; 4096]).unwrap();
    let server = courier_gateway::Server::start(Config::for_tests(dir.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_swept() {
    let t = start(|c| {
        c.token_ttl_secs = 60;
        c.lifecycle_interval_secs = 0;
    })
    .await;
    let alice = t.user("alice").await;
    let api = t.server.api().clone();
    // Before its expiry nothing is swept; after it, alice's token goes (once).
    let report = api.run_lifecycle(courier_storage::now_ms()).await;
    assert_eq!(report.tokens_swept, 0);
    t.http_as(&alice).me().await.unwrap();
    let report = api.run_lifecycle(courier_storage::now_ms() + 61_000).await;
    assert!(report.tokens_swept >= 1);
    let report = api.run_lifecycle(courier_storage::now_ms() + 62_000).await;
    assert_eq!(report.tokens_swept, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_are_private() {
    let t = start(|c| c.admin_addr = "127.0.0.1:0".into()).await;
    let alice = t.user("alice").await;
    for path in ["/metrics", "/v1/stats"] {
        let url = format!("http://{}{path}", t.server.http_addr());
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 403, "{path}");
        let as_user = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(as_user.status(), 403, "{path} with a user's token");
        let as_admin = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&t.server.api().config.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(as_admin.status(), 200, "{path} with the admin token");
        // The operator listener serves them without a token.
        let admin = t.server.admin_addr().unwrap();
        let url = format!("http://{admin}{path}");
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 200, "{path}");
    }
    // ... and nothing else.
    let url = format!("http://{}/v1/me", t.server.admin_addr().unwrap());
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
    t.stop().await;
}
