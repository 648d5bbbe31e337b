//! Multi-device: bindings, the device cap, and every device seeing everything.

mod common;

use common::{kicked, next_message, next_text, TestServer};
use courier_sdk::{Client, ClientOptions, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_device_is_kicked_past_the_cap() {
    let t = TestServer::start_with(|c| c.max_devices_per_user = 3).await;
    let alice = t.user("alice").await;
    let (_d0, mut e0) = t.connect(&alice, "d0").await;
    let (_d1, _e1) = t.connect(&alice, "d1").await;
    let (_d2, _e2) = t.connect(&alice, "d2").await;
    let http = t.http_as(&alice);
    assert_eq!(
        http.devices().await.unwrap()["devices"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // A fourth device: d0, seen longest ago, is unbound and its session kicked.
    let (_d3, _e3) = t.connect(&alice, "d3").await;
    assert_eq!(kicked(&mut e0).await, ErrorCode::DeviceLimit);
    let devices = http.devices().await.unwrap();
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&"d0"));
    assert!(devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["online"] == true));
    // A known device logs in again without kicking anyone.
    let (_d3b, _e3b) = t.connect(&alice, "d3").await;
    // Removing a device over HTTP ends its session (d1 logs in with a token of its
    // own: removing a device revokes every token it used).
    let d1_login = t.http.login("alice", "password123").await.unwrap();
    let (_d1b, mut e1b) = t.connect(&d1_login, "d1").await;
    let manager = t.http.login("alice", "password123").await.unwrap();
    let http = t.http_as(&manager);
    http.remove_device("d1").await.unwrap();
    assert_eq!(kicked(&mut e1b).await, ErrorCode::LoggedOut);
    assert_eq!(
        http.remove_device("d1").await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_is_refused_when_so_configured() {
    let t = TestServer::start_with(|c| {
        c.max_devices_per_user = 2;
        c.device_limit_policy = courier_gateway::config::DeviceLimitPolicy::RefuseNew;
    })
    .await;
    let alice = t.user("alice").await;
    let (_a, _ea) = t.connect(&alice, "a").await;
    let (_b, _eb) = t.connect(&alice, "b").await;
    let options = ClientOptions {
        device_id: "c".into(),
        ..ClientOptions::default()
    };
    let err = Client::connect(t.server.tcp_addr(), &alice.token, options)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::DeviceLimit));
    // The bound ones still get in.
    let (_a2, _ea2) = t.connect(&alice, "a").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_both_users_sees_each_message() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let mut bob_devices = Vec::new();
    for d in ["phone", "tablet", "laptop"] {
        bob_devices.push(t.connect(&bob, d).await);
    }
    let (a_phone, mut a_phone_events) = t.connect(&alice, "phone").await;
    let (_a_tab, mut a_tab_events) = t.connect(&alice, "tablet").await;
    let (_a_lap, mut a_lap_events) = t.connect(&alice, "laptop").await;
    let c = a_phone.direct_with(bob.user_id).unwrap();
    for i in 1..=5u64 {
        assert_eq!(a_phone.send_text(&c, format!("m{i}")).await.unwrap().seq, i);
    }
    for (_, events) in bob_devices.iter_mut() {
        for i in 1..=5u64 {
            assert_eq!(next_text(events).await.seq, i);
        }
    }
    for events in [&mut a_tab_events, &mut a_lap_events] {
        for i in 1..=5u64 {
            let m = next_message(events).await;
            assert_eq!((m.seq, m.sender_device.as_str()), (i, "phone"));
        }
    }
    // The sending device gets its acks, not copies.
    assert!(a_phone_events.try_next().is_none());
    t.stop().await;
}
