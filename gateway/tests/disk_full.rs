//! The whole server on a disk that fills up and frees again: sends are refused
//! with a retryable code (the SDK keeps them and retries), `/v1/health` says
//! `degraded`, history is still served, and once space is back the server writes
//! again by itself: every send stored once, in order, no restart.
//!
//! The "full disk" is the file-size limit (writes past it fail as on a full disk);
//! here the commit log is the first to hit it. When sled's own writes fail first,
//! the store reopens itself instead (`storage/tests/disk_full_indexes.rs`); to a
//! client both look the same. Alone in its own binary: the limit applies to the
//! whole process.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, WAIT};
use courier_sdk::{ClientOptions, ConversationId, MemoryCursorStore, Session, SessionOptions};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}

/// `GET /v1/health`: the status code.
fn health(addr: std::net::SocketAddr) -> u16 {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Waits (bounded) until the server's health says `code`.
async fn health_becomes(addr: std::net::SocketAddr, code: u16) {
    let deadline = Instant::now() + WAIT;
    while health(addr) != code {
        assert!(Instant::now() < deadline, "health never became {code}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_server_and_it_recovers_by_itself() {
    // A write past the limit must fail with EFBIG rather than kill the process.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
        .unwrap();
    }
    let t = TestServer::start().await;
    let http_addr = t.server.http_addr();
    let (a, b) = (t.user("alice").await, t.user("bob").await);
    let c = ConversationId::direct(a.user_id, b.user_id).unwrap();
    let options = SessionOptions {
        client: ClientOptions {
            device_id: "phone".into(),
            ..ClientOptions::default()
        },
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        cursors: Arc::new(MemoryCursorStore::default()),
        ..SessionOptions::default()
    };
    let (session, _events) = Session::start(t.server.tcp_addr().to_string(), &a.token, options)
        .await
        .unwrap();
    for i in 0..10 {
        session.send_text(&c, format!("before {i}")).await.unwrap();
    }
    assert_eq!(health(http_addr), 200);

    // No file of the store may grow past the largest one now.
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    let data_dir = t.server.api().config.data_dir.clone();
    setrlimit(Resource::RLIMIT_FSIZE, largest_file(&data_dir) + 1, hard).unwrap();
    let sending = {
        let session = session.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                let text = format!("during {i} {}", "x".repeat(2000));
                session.send_text(&c, text).await.unwrap();
            }
        })
    };
    health_becomes(http_addr, 503).await;
    assert!(!sending.is_finished(), "sends wait while the disk is full");
    // Reads are served meanwhile.
    let before = t.http_as(&b).history_all(&c, 0).await.unwrap();
    assert!(before.len() >= 10, "{} messages served", before.len());

    // Space is back: the held sends go through, no restart.
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .expect("the held sends are stored once the disk takes writes")
        .unwrap();
    health_becomes(http_addr, 200).await;
    let stored = t.http_as(&b).history_all(&c, 0).await.unwrap();
    assert_eq!(stored.len(), 30, "every send stored once");
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, m)| m.seq == i as u64 + 1));
    let texts: Vec<String> = stored
        .iter()
        .map(|m| m.text.clone().unwrap_or_default())
        .collect();
    for (i, text) in texts.iter().enumerate() {
        match i {
            0..10 => assert_eq!(text, &format!("before {i}")),
            _ => assert!(text.starts_with(&format!("during {} ", i - 10)), "in order"),
        }
    }
    t.stop().await;
}
