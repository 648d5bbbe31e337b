//! The before-send webhook against a real HTTP receiver on loopback: it allows,
//! rejects (the sender gets `MESSAGE_REJECTED` with the reason, nothing is stored)
//! and rewrites; every request carries a valid signature; a hook that times out or
//! fails lets messages through when fail-open and refuses them when fail-closed.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{next_message, text_of, TestServer};
use courier_gateway::config::HookFailure;
use courier_protocol::ErrorCode;
use serde_json::{json, Value};

const SECRET: &str = "webhook secret for the tests";

#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    bad_signatures: AtomicU64,
}

/// A receiver that judges by the text: "forbidden" is rejected, "darn" rewritten,
/// "slow" answered after 2 s, "crash" answered 500; the rest allowed.
async fn receiver(seen: Arc<Seen>) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.requests.fetch_add(1, Ordering::SeqCst);
                let signature = headers
                    .get("courier-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !common::webhook_signed(SECRET, signature, &body) {
                    seen.bad_signatures.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let event: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(event["event"], "before_send");
                let text = event["body"]["text"].as_str().unwrap_or("").to_owned();
                if text.contains("slow") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                if text.contains("crash") {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                let verdict = if text.contains("forbidden") {
                    json!({"action": "reject", "reason": "no forbidden words here"})
                } else if text.contains("darn") {
                    json!({"action": "rewrite", "text": text.replace("darn", "****")})
                } else {
                    json!({"action": "allow"})
                };
                Json(verdict).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

async fn server(url: String, on_failure: HookFailure) -> TestServer {
    TestServer::start_with(|c| {
        c.webhook_secret = SECRET.into();
        c.webhook_before_send_url = url;
        c.webhook_before_send_timeout_ms = 300;
        c.webhook_before_send_on_failure = on_failure;
    })
    .await
}

#[tokio::test]
async fn the_hook_allows_rejects_and_rewrites_with_signed_requests() {
    let seen = Arc::new(Seen::default());
    let t = server(receiver(seen.clone()).await, HookFailure::Reject).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "alice-phone").await;
    let (_b, mut bob_events) = t.connect(&bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();

    a.send_text(&c, "hello").await.unwrap();
    assert_eq!(text_of(&next_message(&mut bob_events).await), "hello");
    let rewritten = a.send_text(&c, "darn it").await.unwrap();
    let m = next_message(&mut bob_events).await;
    assert_eq!((m.seq, text_of(&m)), (rewritten.seq, "**** it".to_owned()));
    let e = a.send_text(&c, "forbidden fruit").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MessageRejected));
    assert!(e.to_string().contains("no forbidden words here"), "{e}");
    a.send_text(&c, "after").await.unwrap();
    assert_eq!(text_of(&next_message(&mut bob_events).await), "after");

    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    let texts: Vec<_> = history.iter().filter_map(|m| m.text.clone()).collect();
    assert_eq!(
        texts,
        ["hello", "**** it", "after"],
        "the refused one was not stored"
    );
    assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
    assert_eq!(seen.bad_signatures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failing_hook_lets_messages_through_when_fail_open() {
    let seen = Arc::new(Seen::default());
    let t = server(receiver(seen.clone()).await, HookFailure::Allow).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "alice-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    a.send_text(&c, "slow but sure").await.unwrap();
    a.send_text(&c, "crash the hook").await.unwrap();
    a.send_text(&c, "forbidden anyway").await.unwrap_err();
    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    assert_eq!(history.len(), 2);
}

#[tokio::test]
async fn a_failing_hook_refuses_messages_when_fail_closed() {
    let seen = Arc::new(Seen::default());
    let t = server(receiver(seen.clone()).await, HookFailure::Reject).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _ae) = t.connect(&alice, "alice-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for text in ["slow but sure", "crash the hook"] {
        let e = a.send_text(&c, text).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::MessageRejected), "{text}");
    }
    a.send_text(&c, "fine").await.unwrap();
    // Nobody listening at all: refused too.
    let t2 = server("http://127.0.0.1:9/hook".into(), HookFailure::Reject).await;
    let carol = t2.user("carol").await;
    let dave = t2.user("dave").await;
    let (cc, _ce) = t2.connect(&carol, "carol-phone").await;
    let c2 = cc.direct_with(dave.user_id).unwrap();
    let e = cc.send_text(&c2, "anyone?").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::MessageRejected));
    assert_eq!(t.http_as(&bob).history_all(&c, 0).await.unwrap().len(), 1);
}
