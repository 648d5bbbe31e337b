//! Asynchronous webhook events against a real receiver on loopback: after-send,
//! group-changed and presence events arrive signed, batched, each once; a receiver
//! that is down gets everything once it is back; events queued before a restart
//! are delivered after it, and events delivered before it are not delivered again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{TestServer, WAIT};
use courier_gateway::{Config, Server};
use courier_sdk::{Client, ClientOptions, HttpClient, NewGroup};
use serde_json::Value;

const SECRET: &str = "webhook secret for the tests";

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    events: Mutex<Vec<Value>>,
    deliveries: AtomicU64,
    bad_signatures: AtomicU64,
}

impl Receiver {
    fn of(&self, kind: &str) -> Vec<Value> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until `n` events of `kind` have arrived (polling: the receiver is
    /// another task with no signal to the test).
    async fn wait_for(&self, kind: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.of(kind);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} {kind} events",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receiver(up: bool) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver::default());
    state.up.store(up, Ordering::SeqCst);
    let shared = state.clone();
    let app = Router::new().route(
        "/events",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = shared.clone();
            async move {
                if !state.up.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let signature = headers
                    .get("courier-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !common::webhook_signed(SECRET, signature, &body) {
                    state.bad_signatures.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::UNAUTHORIZED;
                }
                let batch: Value = serde_json::from_slice(&body).unwrap();
                let events = batch["events"].as_array().unwrap().clone();
                state.events.lock().unwrap().extend(events);
                state.deliveries.fetch_add(1, Ordering::SeqCst);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, format!("http://{addr}/events"))
}

fn with_events(c: &mut Config, url: &str) {
    c.webhook_secret = SECRET.into();
    c.webhook_events_url = url.into();
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_arrive_signed_batched_and_once_when_the_receiver_comes_back() {
    let (rx, url) = receiver(false).await;
    let t = TestServer::start_with(|c| with_events(c, &url)).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "alice-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for i in 0..30 {
        a.send_text(&c, format!("m{i}")).await.unwrap();
    }
    let group = t
        .http_as(&alice)
        .create_group(&NewGroup {
            name: "crew".into(),
            members: vec![bob.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap();
    // The receiver is down: everything waits in the outbox, retried.
    rx.up.store(true, Ordering::SeqCst);
    let sent = rx.wait_for("after_send", 30).await;
    let texts: Vec<_> = sent
        .iter()
        .map(|e| e["body"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        (0..30).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!(sent[0]["sender"], alice.user_id);
    assert_eq!(sent[0]["conversation"], c.to_string());
    let changed = rx.wait_for("group_changed", 1).await;
    assert_eq!(changed[0]["conversation"], format!("g:{}", group.group_id));
    let online = rx.wait_for("user_online", 1).await;
    assert_eq!(online[0]["user_id"], alice.user_id);
    drop(a);
    let offline = rx.wait_for("user_offline", 1).await;
    assert_eq!(offline[0]["user_id"], alice.user_id);

    let all = rx.events.lock().unwrap().clone();
    let unique: std::collections::HashSet<_> = ids(&all).into_iter().collect();
    assert_eq!(unique.len(), all.len(), "each event once");
    assert!(
        rx.deliveries.load(Ordering::SeqCst) < 10,
        "batched: {} deliveries for {} events",
        rx.deliveries.load(Ordering::SeqCst),
        all.len()
    );
    assert_eq!(rx.bad_signatures.load(Ordering::SeqCst), 0);
    let metrics = t.admin().metrics().await.unwrap();
    assert!(
        metrics.contains("courier_webhook_events_delivered_total"),
        "{metrics}"
    );
    assert!(metrics.contains("courier_webhook_event_failures_total"));
}

#[tokio::test]
async fn events_queued_before_a_restart_are_delivered_after_it_once() {
    let (rx, url) = receiver(false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = Config::for_tests(dir.path());
        with_events(&mut c, &url);
        c.webhook_events = "after_send".into();
        c
    };
    let server = Server::start(config()).await.unwrap();
    let http = HttpClient::new(format!("http://{}", server.http_addr()));
    http.register("carol", "password123").await.unwrap();
    http.register("dave", "password123").await.unwrap();
    let carol = http.login("carol", "password123").await.unwrap();
    let dave = http.login("dave", "password123").await.unwrap();
    let (cc, _e) = Client::connect(server.tcp_addr(), &carol.token, ClientOptions::default())
        .await
        .unwrap();
    let c = cc.direct_with(dave.user_id).unwrap();
    for i in 0..5 {
        cc.send_text(&c, format!("before {i}")).await.unwrap();
    }
    drop(cc);
    server.shutdown().await;

    // Back up, with the receiver up: the five arrive.
    rx.up.store(true, Ordering::SeqCst);
    let server = Server::start(config()).await.unwrap();
    let got = rx.wait_for("after_send", 5).await;
    assert_eq!(
        got.iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    server.shutdown().await;

    // Once more: what was acknowledged is not delivered again; the next one is.
    let server = Server::start(config()).await.unwrap();
    let (cc, _e) = Client::connect(server.tcp_addr(), &carol.token, ClientOptions::default())
        .await
        .unwrap();
    cc.send_text(&c, "after").await.unwrap();
    let got = rx.wait_for("after_send", 6).await;
    assert_eq!(got.len(), 6, "{:?}", ids(&got));
    assert_eq!(got[5]["body"]["text"], "after");
    server.shutdown().await;
}
