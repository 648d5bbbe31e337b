//! Three gateway processes over one real PostgreSQL and a real 3-server NATS
//! cluster: messages between clients on different nodes, presence across nodes,
//! membership changes seen by every node, a node killed with `kill -9`, a NATS server
//! killed.

mod common;
#[path = "../../storage-pg/tests/common/mod.rs"]
mod pg;

use std::time::Duration;

use common::cluster::{start_node, Nats, Node};
use common::{next_message, next_text, WAIT};
use courier_sdk::{pb, Client, ClientOptions, ConversationId, Event, Events, LoginInfo, NewGroup};

struct Deployment {
    _db: pg::PgServer,
    nats: Nats,
    nodes: Vec<Node>,
}

async fn health(node: &Node) -> serde_json::Value {
    let url = format!("{}/v1/health", node.http_base);
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Waits until every node in `nodes` is connected to NATS and sees `peers` others.
async fn settled(nodes: &[&Node], peers: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            let mut all = true;
            for n in nodes {
                let h = health(n).await;
                all &= h["cluster"]["nats"] == "connected" && h["cluster"]["nodes"] == peers;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the nodes found each other");
}

async fn deployment(extra: &[(&str, &str)]) -> Deployment {
    let db = pg::PgServer::start();
    let nats = Nats::start(3);
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(start_node(&format!("gw{i}"), &db.url, &nats.urls(), extra).await);
    }
    settled(&nodes.iter().collect::<Vec<_>>(), 2).await;
    Deployment {
        _db: db,
        nats,
        nodes,
    }
}

impl Deployment {
    async fn user(&self, name: &str) -> LoginInfo {
        let http = &self.nodes[0].http;
        http.register(name, "password123").await.unwrap();
        http.login(name, "password123").await.unwrap()
    }
}

async fn connect(node: &Node, login: &LoginInfo, device: &str) -> (Client, Events) {
    let options = ClientOptions {
        device_id: device.to_owned(),
        ..ClientOptions::default()
    };
    Client::connect(&node.tcp, &login.token, options)
        .await
        .unwrap()
}

async fn send_texts(client: &Client, c: &ConversationId, prefix: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..n {
        let body = pb::MessageBody::text(format!("{prefix} {i}"));
        let ack = client
            .send(c, body, courier_sdk::new_client_msg_id())
            .await
            .unwrap();
        seqs.push(ack.seq);
    }
    seqs
}

/// The next `n` text messages' seqs (system events skipped).
async fn texts(events: &mut Events, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        seqs.push(next_text(events).await.seq);
    }
    seqs
}

/// Nothing but presence arrives within `quiet`.
async fn no_message(events: &mut Events, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        if let Event::Message(m) = e {
            panic!("unexpected message: seq {} in {:?}", m.seq, m.conversation);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_member_changes_cross_nodes_exactly_once_in_order() {
    let d = deployment(&[]).await;
    let (g1, g2, g3) = (&d.nodes[0], &d.nodes[1], &d.nodes[2]);
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let carol = d.user("carol").await;
    let (a_phone, mut a_phone_events) = connect(g1, &alice, "alice-phone").await;
    let (_a_laptop, mut a_laptop_events) = connect(g2, &alice, "alice-laptop").await;
    let (b, mut b_events) = connect(g3, &bob, "bob-phone").await;
    // Bob's events are read for the 1:1 part only.
    let (_c, mut c_events) = connect(g2, &carol, "carol-phone").await;

    // 1:1 from a device on gw1 to a device on gw3 and the sender's own on gw2.
    let direct = a_phone.direct_with(bob.user_id).unwrap();
    let sent = send_texts(&a_phone, &direct, "hi bob", 40).await;
    assert_eq!(sent, (1..=40).collect::<Vec<_>>());
    assert_eq!(texts(&mut b_events, 40).await, sent, "bob, on gw3");
    assert_eq!(
        texts(&mut a_laptop_events, 40).await,
        sent,
        "alice's laptop, on gw2"
    );

    // A group with a member on each node; bob writes from gw3.
    let group = g1
        .http
        .clone()
        .with_token(&alice.token)
        .create_group(&NewGroup {
            name: "three nodes".into(),
            join_policy: None,
            history_visible: None,
            members: vec![bob.user_id, carol.user_id],
        })
        .await
        .unwrap();
    let g = ConversationId::Group(group.group_id);
    let sent = send_texts(&b, &g, "hi all", 20).await;
    for (who, events) in [
        ("alice's phone, gw1", &mut a_phone_events),
        ("alice's laptop, gw2", &mut a_laptop_events),
        ("carol, gw2", &mut c_events),
    ] {
        assert_eq!(texts(events, 20).await, sent, "{who}");
    }

    // Carol is removed on gw1; the event is the last she hears of the group, and
    // what bob sends on gw3 afterwards reaches alice but not her.
    g1.http
        .clone()
        .with_token(&alice.token)
        .remove_member(group.group_id, carol.user_id)
        .await
        .unwrap();
    let removal = next_message(&mut c_events).await;
    assert_eq!(removal.conversation, g.to_string());
    assert!(
        removal.body.as_ref().unwrap().as_text().is_none(),
        "a system event"
    );
    let after = send_texts(&b, &g, "carol is gone", 5).await;
    assert_eq!(texts(&mut a_laptop_events, 5).await, after);
    assert_eq!(texts(&mut a_phone_events, 5).await, after);
    // Alice's laptop shares carol's node: had anything been routed to carol, it
    // would have been queued by now.
    no_message(&mut c_events, Duration::from_millis(300)).await;
}

/// Presence changes, in `events`, for `dur`.
async fn presence(events: &mut Events, dur: Duration) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + dur;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.next()).await {
        if let Event::Presence(batch) = e {
            out.extend(batch.changes.iter().map(|c| (c.user_id, c.online)));
        }
    }
    out
}

/// Waits for `user`'s next presence change in `events`.
async fn presence_of(events: &mut Events, user: u64) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Presence(batch)) => {
                    if let Some(c) = batch.changes.iter().rev().find(|c| c.user_id == user) {
                        return c.online;
                    }
                }
                Some(Event::Closed) | None => panic!("closed while waiting for presence"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("a presence change in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_per_user_across_nodes_and_a_killed_node_goes_offline() {
    let d = deployment(&[
        ("COURIER_PRESENCE_GRACE_MS", "200"),
        ("COURIER_PRESENCE_WINDOW_MS", "20"),
    ])
    .await;
    let (g1, g2, g3) = (&d.nodes[0], &d.nodes[1], &d.nodes[2]);
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let as_alice = g1.http.clone().with_token(&alice.token);
    let as_bob = g2.http.clone().with_token(&bob.token);
    as_alice.request_friend(bob.user_id).await.unwrap();
    as_bob.accept_friend(alice.user_id).await.unwrap();
    let (_a, mut a_events) = connect(g1, &alice, "alice-phone").await;

    // Bob's first device, on gw2: alice (gw1) is told he is online.
    let (b_phone, _b_phone_events) = connect(g2, &bob, "bob-phone").await;
    assert!(presence_of(&mut a_events, bob.user_id).await);
    // A second device on gw3 and the first one leaving: he never went offline.
    let (_b_laptop, _b_laptop_events) = connect(g3, &bob, "bob-laptop").await;
    drop(b_phone);
    drop(_b_phone_events);
    let seen = presence(&mut a_events, Duration::from_millis(800)).await;
    assert!(
        !seen.contains(&(bob.user_id, false)),
        "bob still has a device online (on gw3): {seen:?}"
    );
    let health = health(g1).await;
    assert_eq!(health["cluster"]["users_online"], 2, "{health}");

    // gw3 dies with bob's last device on it: when its lease runs out, bob is offline
    // everywhere.
    let mut d = d;
    d.nodes[2].kill().await;
    assert!(!presence_of(&mut a_events, bob.user_id).await);
    settled(&[&d.nodes[0], &d.nodes[1]], 1).await;

    // Bob reconnects to gw2 and messages reach him there.
    let (_b, mut b_events) = connect(&d.nodes[1], &bob, "bob-laptop").await;
    assert!(presence_of(&mut a_events, bob.user_id).await);
    let c = _a.direct_with(bob.user_id).unwrap();
    let sent = send_texts(&_a, &c, "still here", 3).await;
    assert_eq!(texts(&mut b_events, 3).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_continues_when_a_nats_server_dies() {
    let mut d = deployment(&[]).await;
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let (a, _a_events) = connect(&d.nodes[0], &alice, "alice-phone").await;
    let (_b, mut b_events) = connect(&d.nodes[2], &bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    let sent = send_texts(&a, &c, "before", 10).await;
    assert_eq!(texts(&mut b_events, 10).await, sent);

    // The seed server goes; the nodes on it reconnect to the others. Frames in
    // flight meanwhile may be lost (a client fills such gaps from history); live
    // delivery must resume, and nothing acknowledged is lost.
    d.nats.kill(0);
    let mut probes = Vec::new();
    let resumed = tokio::time::timeout(WAIT, async {
        loop {
            probes.extend(send_texts(&a, &c, "probe", 1).await);
            let heard = tokio::time::timeout(Duration::from_millis(300), next_text(&mut b_events));
            if let Ok(m) = heard.await {
                return m.seq;
            }
        }
    })
    .await
    .expect("live delivery resumed");
    assert!(probes.contains(&resumed));
    settled(&d.nodes.iter().collect::<Vec<_>>(), 2).await;
    // Probes still in flight arrive first; then the rest, exactly once, in order.
    let last_probe = *probes.last().unwrap();
    let sent = send_texts(&a, &c, "after", 10).await;
    let mut got = Vec::new();
    while got.len() < 10 {
        let seq = next_text(&mut b_events).await.seq;
        if seq > last_probe {
            got.push(seq);
        } else {
            assert!(
                seq > resumed && probes.contains(&seq),
                "seq {seq} twice or out of order"
            );
        }
    }
    assert_eq!(got, sent);
    let history = d.nodes[1]
        .http
        .clone()
        .with_token(&bob.token)
        .history_all(&c, 0)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        20 + probes.len(),
        "every acknowledged message is stored"
    );
}
