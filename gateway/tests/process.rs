//! The real `courier` binary: a `kill -9` mid-stream loses no acknowledged message,
//! and SIGTERM shuts down gracefully.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::WAIT;
use courier_sdk::{
    pb, Client, ClientOptions, ConversationId, ErrorCode, Event, HistoryQuery, HttpClient, NewGroup,
};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::process::{Child, Command};

struct Running {
    child: Child,
    tcp: String,
    http: HttpClient,
}

async fn spawn_server(data_dir: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args([
            "serve",
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("COURIER_PASSWORD_MEMORY_KIB", "64")
        .env("COURIER_PASSWORD_ITERATIONS", "1")
        .env("COURIER_LOG", "warn")
        // These tests are about durability: thousands of messages from one stranger
        // to another, which the default rate limits would (rightly) refuse.
        .env("COURIER_RATE_LIMITS", "off")
        .env("COURIER_GROUP_ADD_POLICY", "anyone")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let v = common::listening(&mut child).await;
    Running {
        child,
        tcp: v["tcp"].as_str().unwrap().to_owned(),
        http: HttpClient::new(v["http"].as_str().unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path()).await;
    server.http.register("alice", "password123").await.unwrap();
    let bob = server.http.register("bob", "password123").await.unwrap();
    let alice = server.http.login("alice", "password123").await.unwrap();
    let (client, events) = Client::connect(&server.tcp, &alice.token, ClientOptions::default())
        .await
        .unwrap();
    drop(events);
    let c = client.direct_with(bob.user_id).unwrap();

    // Stream sends (32 in flight) and record every acknowledgement.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel();
    let sender = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut enough = Some(enough_tx);
            let mut in_flight = FuturesOrdered::new();
            for i in 0.. {
                let client = client.clone();
                let id = format!("crash-{i}");
                in_flight.push_back(async move {
                    let r = client
                        .send(&c, pb::MessageBody::text(format!("m{i}")), id.clone())
                        .await;
                    r.map(|r| (r.seq, id))
                });
                if in_flight.len() < 32 {
                    continue;
                }
                match in_flight.next().await.unwrap() {
                    Ok(ack) => {
                        let mut acked = acked.lock().unwrap();
                        acked.push(ack);
                        if acked.len() >= 2000 {
                            if let Some(tx) = enough.take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        })
    };
    tokio::time::timeout(WAIT, enough_rx)
        .await
        .expect("2000 acks in time")
        .unwrap();
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    tokio::time::timeout(WAIT, sender)
        .await
        .expect("sender stops once the server is gone")
        .unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 2000);

    // Same data directory, fresh process: every acknowledged message is there, seqs gap-free.
    let server = spawn_server(dir.path()).await;
    let bob_login = server.http.login("bob", "password123").await.unwrap();
    let history = server
        .http
        .clone()
        .with_token(&bob_login.token)
        .history_all(&c, 0)
        .await
        .unwrap();
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    for (seq, id) in &acked {
        let m = &history[(*seq - 1) as usize];
        assert_eq!(&m.client_msg_id, id, "acked seq {seq} holds its message");
    }
    // Dedupe survived the crash: a resend of an acknowledged message is not stored again.
    let alice = server.http.login("alice", "password123").await.unwrap();
    let (client, _events) = Client::connect(&server.tcp, &alice.token, ClientOptions::default())
        .await
        .unwrap();
    let (seq, id) = acked.last().unwrap().clone();
    let again = client
        .send(&c, pb::MessageBody::text("again"), id)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, seq);
}

/// Operations are as durable as messages: group changes with their events, read
/// cursors and friendships acknowledged up to a `kill -9` are all there after the
/// restart, each whole (a member in the list has its entry, each change its event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_acknowledged_operation() {
    const ROUNDS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path()).await;
    let mut ids = Vec::new();
    for name in ["owner", "bob", "carol"] {
        ids.push(
            server
                .http
                .register(name, "password123")
                .await
                .unwrap()
                .user_id,
        );
    }
    let login = |server: &Running, name: &'static str| {
        let http = server.http.clone();
        async move {
            let token = http.login(name, "password123").await.unwrap().token;
            http.with_token(&token)
        }
    };
    let (owner, bob, carol) = (
        login(&server, "owner").await,
        login(&server, "bob").await,
        login(&server, "carol").await,
    );
    let (owner_id, bob_id, carol_id) = (ids[0], ids[1], ids[2]);
    let group = owner
        .create_group(&NewGroup {
            name: "ops".into(),
            members: vec![bob_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(group);
    // Each round: carol joins or leaves, owner and carol befriend or part, bob
    // reads up to the newest message. Every call returns once acknowledged.
    let (mut carol_in, mut friends, mut bob_read) = (false, false, 0);
    for _ in 0..ROUNDS {
        if carol_in {
            owner.remove_member(group, carol_id).await.unwrap();
        } else {
            let added = owner.add_members(group, &[carol_id]).await.unwrap();
            assert_eq!(added.added, vec![carol_id]);
        }
        carol_in = !carol_in;
        if friends {
            owner.remove_friend(carol_id).await.unwrap();
        } else {
            owner.request_friend(carol_id).await.unwrap();
            carol.accept_friend(owner_id).await.unwrap();
        }
        friends = !friends;
        let newest = bob
            .history(&c, HistoryQuery::default())
            .await
            .unwrap()
            .messages
            .last()
            .unwrap()
            .seq;
        bob_read = bob.mark_read(&c, newest).await.unwrap();
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    let server = spawn_server(dir.path()).await;
    let (owner, bob) = (login(&server, "owner").await, login(&server, "bob").await);
    let members: Vec<u64> = owner
        .members(group, None, None)
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| m.user_id)
        .collect();
    let mut expected = vec![owner_id, bob_id];
    if carol_in {
        expected.push(carol_id);
    }
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert_eq!(owner.relation(carol_id).await.unwrap().friend, friends);
    // The group's log: its creation, bob's arrival, then one event per round.
    let log = bob.history_all(&c, 0).await.unwrap();
    let seqs: Vec<u64> = log.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=2 + ROUNDS).collect::<Vec<_>>());
    let entry = bob
        .conversations(None, None)
        .await
        .unwrap()
        .conversations
        .into_iter()
        .find(|e| e.group == Some(group))
        .expect("bob's entry for the group");
    assert_eq!(entry.read_seq, bob_read);
    assert_eq!(bob_read, 2 + ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path()).await;
    server.http.register("alice", "password123").await.unwrap();
    let bob = server.http.register("bob", "password123").await.unwrap();
    let alice = server.http.login("alice", "password123").await.unwrap();
    let (client, mut events) = Client::connect(&server.tcp, &alice.token, ClientOptions::default())
        .await
        .unwrap();
    let c = client.direct_with(bob.user_id).unwrap();
    for i in 0..50 {
        client
            .send_text(&c, format!("before shutdown {i}"))
            .await
            .unwrap();
    }

    let pid = server.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let kicked = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Kicked { code, .. }) => return Some(code),
                Some(Event::Closed) | None => return None,
                Some(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(kicked, Some(ErrorCode::GoingAway));
    let exit = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    let server = spawn_server(dir.path()).await;
    let login = server.http.login("bob", "password123").await.unwrap();
    let history = server
        .http
        .clone()
        .with_token(&login.token)
        .history_all(&c, 0)
        .await
        .unwrap();
    assert_eq!(history.len(), 50);
}
