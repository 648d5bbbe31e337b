//! Three gateway processes over one real PostgreSQL and a real 3-server NATS
//! cluster: messages between clients on different nodes, presence across nodes,
//! membership changes seen by every node, a node killed with `kill -9`, a NATS server
//! killed.

mod common;
#[path = "../../storage-pg/tests/common/mod.rs"]
mod pg;

use std::time::Duration;

use common::cluster::{start_node, Nats, Node};
use common::{kicked, next_message, next_text, WAIT};
use courier_sdk::ErrorCode;
use courier_sdk::{
    pb, Client, ClientOptions, ConversationId, Event, Events, LoginInfo, NewGroup, Session,
    SessionEvent, SessionEvents, SessionOptions,
};
use futures_util::stream::{FuturesOrdered, StreamExt};

struct Deployment {
    db: pg::PgServer,
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
    Deployment { db, nats, nodes }
}

impl Deployment {
    /// Sessions for bob (on node `bob_node` only) and alice (on any node, gw1 first).
    async fn sessions(
        &self,
        alice: &LoginInfo,
        bob: &LoginInfo,
        bob_node: usize,
    ) -> ((Session, SessionEvents), (Session, SessionEvents)) {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.tcp.clone()).collect();
        let bob = Session::start_any(
            [addrs[bob_node].clone()],
            &bob.token,
            session_options("bob-phone"),
        )
        .await
        .unwrap();
        let alice = Session::start_any(addrs, &alice.token, session_options("alice-phone"))
            .await
            .unwrap();
        (bob, alice)
    }

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

/// A removal made over HTTP on a node that does not own the group, while another
/// member streams messages into it: the owner makes the change in order with the
/// messages, so the removed member receives nothing stored after its removal event,
/// and the members who stay see every message and the event once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_change_is_made_by_the_owner_in_order_with_the_messages() {
    let d = deployment(&[]).await;
    let g1 = &d.nodes[0];
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let carol = d.user("carol").await;
    let alice_http = g1.http.clone().with_token(&alice.token);
    let forwarded = "courier_cluster_group_changes_forwarded_total";

    // A group that gw1 does not own: gw1 forwards a rename of it.
    let mut group = None;
    for attempt in 0..30 {
        let g = alice_http
            .create_group(&NewGroup {
                name: format!("not gw1's {attempt}"),
                join_policy: None,
                history_visible: None,
                members: vec![bob.user_id, carol.user_id],
            })
            .await
            .unwrap();
        let before = g1.counter(forwarded).await;
        alice_http
            .update_group(g.group_id, Some("renamed"), None, None)
            .await
            .unwrap();
        if g1.counter(forwarded).await > before {
            group = Some(g.group_id);
            break;
        }
    }
    let group = group.expect("a group that gw1 does not own");
    let g = ConversationId::Group(group);
    let served: u64 = {
        let mut total = 0;
        for n in &d.nodes[1..] {
            total += n
                .counter("courier_cluster_group_changes_served_total")
                .await;
        }
        total
    };
    assert!(served >= 1, "the owner made the forwarded change");

    let (bob_client, _bob_events) = connect(&d.nodes[1], &bob, "bob-phone").await;
    let (_carol_client, mut carol_events) = connect(&d.nodes[2], &carol, "carol-phone").await;
    let (_alice_client, mut alice_events) = connect(&d.nodes[2], &alice, "alice-phone").await;

    // Bob streams 400 messages, 32 in flight at a time (so the owner commits them in
    // back-to-back batches); once alice has seen 20, carol is removed on gw1 while
    // the rest are in flight.
    let sending = {
        let bob_client = bob_client.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut in_flight = FuturesOrdered::new();
            for i in 0..400 {
                let c = bob_client.clone();
                in_flight.push_back(async move {
                    let body = pb::MessageBody::text(format!("stream {i}"));
                    c.send(&g, body, courier_sdk::new_client_msg_id()).await
                });
                if in_flight.len() == 32 {
                    seqs.push(in_flight.next().await.unwrap().unwrap().seq);
                }
            }
            while let Some(ack) = in_flight.next().await {
                seqs.push(ack.unwrap().seq);
            }
            seqs
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let m = next_text(&mut alice_events).await;
        seen.push(m.seq);
    }
    alice_http
        .remove_member(group, carol.user_id)
        .await
        .unwrap();
    let sent = sending.await.unwrap();

    // Carol: messages up to her removal event, which is her last.
    let mut carol_seen = Vec::new();
    let removal_seq = loop {
        let m = next_message(&mut carol_events).await;
        assert_eq!(m.conversation, g.to_string());
        carol_seen.push(m.seq);
        let content = m.body.as_ref().and_then(|b| b.content.as_ref());
        if let Some(pb::message_body::Content::System(pb::SystemEvent {
            event: Some(pb::system_event::Event::MemberLeft(left)),
        })) = content
        {
            assert_eq!(left.user_id, carol.user_id);
            break m.seq;
        }
    };
    no_message(&mut carol_events, Duration::from_millis(300)).await;
    assert!(
        carol_seen.windows(2).all(|w| w[0] < w[1]),
        "carol, in seq order: {carol_seen:?}"
    );
    let after: Vec<u64> = sent.iter().copied().filter(|&s| s > removal_seq).collect();
    assert!(
        !after.is_empty(),
        "some messages were stored after the removal"
    );
    // Alice sees every message and the event, in seq order.
    let last = sent.iter().max().copied();
    while seen.last().copied() != last {
        let m = next_message(&mut alice_events).await;
        seen.push(m.seq);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seen:?}"
    );
    assert!(seen.contains(&removal_seq));
    assert!(sent.iter().all(|s| seen.contains(s)));
    println!(
        "removal at seq {removal_seq}; {} of bob's 400 messages after it",
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_device_removal_end_sessions_on_every_node() {
    let d = deployment(&[]).await;
    let alice = d.user("alice").await;
    // One login per device: removing a device revokes the tokens it used.
    let login = || d.nodes[0].http.login("alice", "password123");
    let (laptop_login, tablet_login) = (login().await.unwrap(), login().await.unwrap());
    let (_phone, mut phone_events) = connect(&d.nodes[0], &alice, "alice-phone").await;
    let (_laptop, mut laptop_events) = connect(&d.nodes[1], &laptop_login, "alice-laptop").await;
    let (_tablet, mut tablet_events) = connect(&d.nodes[2], &tablet_login, "alice-tablet").await;
    // The phone (gw1) removes the laptop (gw2): its session ends at once.
    let as_alice = d.nodes[0].http.clone().with_token(&alice.token);
    as_alice.remove_device("alice-laptop").await.unwrap();
    assert_eq!(kicked(&mut laptop_events).await, ErrorCode::LoggedOut);
    // The tablet's token logged out through gw1 ends its session on gw3.
    let as_tablet = d.nodes[0].http.clone().with_token(&tablet_login.token);
    as_tablet.logout().await.unwrap();
    assert_eq!(kicked(&mut tablet_events).await, ErrorCode::LoggedOut);
    // "Log out everywhere" through gw2 ends the phone's session on gw1.
    let as_phone = d.nodes[1].http.clone().with_token(&alice.token);
    as_phone.logout_everywhere().await.unwrap();
    assert_eq!(kicked(&mut phone_events).await, ErrorCode::LoggedOut);
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
        "every acknowledged message is stored: probes {probes:?}, resumed {resumed}, after {got:?}, stored {:?}",
        history.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
}

fn session_options(device: &str) -> SessionOptions {
    SessionOptions {
        client: ClientOptions {
            device_id: device.to_owned(),
            ..ClientOptions::default()
        },
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SessionOptions::default()
    }
}

/// The texts of the next `n` messages of `events`, checking they come in seq order.
async fn session_texts(events: &mut SessionEvents, n: usize) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            if let Some(SessionEvent::Message(m)) = events.next().await {
                let Some(text) = m.body.as_ref().and_then(|b| b.as_text()) else {
                    continue;
                };
                if let Some((last, _)) = out.last() {
                    assert!(
                        m.seq > *last,
                        "seq {} after {last}: out of order or doubled",
                        m.seq
                    );
                }
                out.push((m.seq, text.to_owned()));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} messages arrived", out.len()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_another_node_when_its_node_is_killed_mid_stream() {
    const N: usize = 300;
    let mut d = deployment(&[]).await;
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    // Bob on gw3; alice's list starts with gw1, where she lands.
    let ((_bob, mut bob_events), (alice_session, _alice_events)) =
        d.sessions(&alice, &bob, 2).await;
    let c = ConversationId::direct(alice.user_id, bob.user_id).unwrap();

    // 32 sends in flight; gw1 is killed after the 100th acknowledgement.
    let mut in_flight = FuturesOrdered::new();
    let mut acked = Vec::new();
    for i in 0..N {
        let receipt = alice_session
            .submit_send(
                &c,
                pb::MessageBody::text(format!("m{i}")),
                format!("fail-{i}"),
            )
            .await
            .unwrap();
        in_flight.push_back(receipt);
        if in_flight.len() >= 32 {
            acked.push(in_flight.next().await.unwrap().unwrap().seq);
        }
        if acked.len() == 100 && i < N - 1 {
            d.nodes[0].kill().await;
        }
    }
    while let Some(r) = in_flight.next().await {
        acked.push(r.unwrap().seq);
    }
    assert_eq!(
        acked,
        (1..=N as u64).collect::<Vec<_>>(),
        "each send stored once, in order"
    );

    // Bob sees every message once, in order.
    let got = session_texts(&mut bob_events, N).await;
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(texts, (0..N).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let history = d.nodes[1]
        .http
        .clone()
        .with_token(&bob.token)
        .history_all(&c, 0)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        N,
        "nothing acknowledged lost, nothing doubled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_during_a_postgres_crash_are_refused_clearly_and_retried_after() {
    let d = deployment(&[]).await;
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let ((_bob, mut bob_events), (alice_session, _alice_events)) =
        d.sessions(&alice, &bob, 1).await;
    let (raw, _raw_events) = connect(&d.nodes[0], &alice, "alice-laptop").await;
    let c = ConversationId::direct(alice.user_id, bob.user_id).unwrap();
    for i in 0..20 {
        alice_session.send_text(&c, format!("m{i}")).await.unwrap();
    }

    d.db.crash();
    // A plain client is told the store cannot write, and to come back later.
    let refused = raw
        .send(&c, pb::MessageBody::text("refused"), "refused-1".into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Some(ErrorCode::StorageUnavailable | ErrorCode::Overloaded)
        ),
        "{refused:?}"
    );
    // The session keeps its sends and retries them once PostgreSQL is back.
    let mut waiting = FuturesOrdered::new();
    for i in 20..30 {
        let receipt = alice_session
            .submit_send(
                &c,
                pb::MessageBody::text(format!("m{i}")),
                format!("outage-{i}"),
            )
            .await
            .unwrap();
        waiting.push_back(receipt);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.db.start_again();
    let mut seqs = Vec::new();
    while let Some(r) = tokio::time::timeout(WAIT, waiting.next())
        .await
        .expect("the retried sends were stored")
    {
        seqs.push(r.unwrap().seq);
    }
    // Each stored once. (Sends refused and retried one by one are not kept in the
    // order they were made: each retries on its own timer.)
    seqs.sort_unstable();
    assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
    let got = session_texts(&mut bob_events, 30).await;
    let mut texts: Vec<String> = got.into_iter().map(|(_, t)| t).collect();
    texts[20..].sort_by_key(|t| t[1..].parse::<u32>().unwrap());
    assert_eq!(texts, (0..30).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let history = d.nodes[2]
        .http
        .clone()
        .with_token(&bob.token)
        .history_all(&c, 0)
        .await
        .unwrap();
    assert_eq!(
        history.len(),
        30,
        "every acknowledged message survived the crash"
    );
}

/// The next event of `events` that `pick` takes; panics after the wait.
async fn next_event<T>(events: &mut Events, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::Closed) | None => panic!("closed while waiting for an event"),
                Some(e) => {
                    if let Some(t) = pick(e) {
                        return t;
                    }
                }
            }
        }
    })
    .await
    .expect("the event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_profiles_and_join_requests_cross_nodes() {
    let d = deployment(&[
        ("COURIER_PRESENCE_WINDOW_MS", "20"),
        ("COURIER_GROUP_ADD_POLICY", "anyone"),
    ])
    .await;
    let (g1, g2, g3) = (&d.nodes[0], &d.nodes[1], &d.nodes[2]);
    let alice = d.user("alice").await;
    let bob = d.user("bob").await;
    let carol = d.user("carol").await;
    let dave = d.user("dave").await;
    let g = g1
        .http
        .clone()
        .with_token(&alice.token)
        .create_group(&NewGroup {
            name: "across".into(),
            join_policy: Some("approval".into()),
            members: vec![bob.user_id, dave.user_id],
            ..NewGroup::default()
        })
        .await
        .unwrap()
        .group_id;
    let c = ConversationId::Group(g);
    let (a, mut a_events) = connect(g1, &alice, "alice-phone").await;
    let (b, mut b_events) = connect(g2, &bob, "bob-phone").await;

    // Bob (gw2) reacts to alice's (gw1) message: the owner of the conversation
    // stores it, and its event reaches alice after the messages, with the next seq.
    let sent = send_texts(&a, &c, "hello", 3).await;
    assert_eq!(texts(&mut b_events, 3).await, sent);
    let ack = b.react(&c, sent[0], "👍", false).await.unwrap();
    assert!(ack.changed);
    assert_eq!(ack.event_seq, sent[2] + 1);
    let event = next_message(&mut a_events).await;
    assert_eq!(event.seq, ack.event_seq);
    assert!(
        matches!(
            event.body.and_then(|b| b.content),
            Some(pb::message_body::Content::System(pb::SystemEvent {
                event: Some(pb::system_event::Event::ReactionsChanged(_))
            }))
        ),
        "a ReactionsChanged event"
    );
    // One reaction from each node: the two not owning the conversation forward
    // theirs, the owner stores all three, one event each, in seq order.
    let (d_client, _d_events) = connect(g3, &dave, "dave-phone").await;
    let a_ack = a.react(&c, sent[0], "👍", false).await.unwrap();
    let d_ack = d_client.react(&c, sent[0], "👍", false).await.unwrap();
    assert_eq!(
        (a_ack.event_seq, d_ack.event_seq),
        (ack.event_seq + 1, ack.event_seq + 2)
    );
    let mut forwarded = 0;
    let mut served = 0;
    for n in [g1, g2, g3] {
        forwarded += n.counter("courier_cluster_reactions_forwarded_total").await;
        served += n.counter("courier_cluster_reactions_served_total").await;
    }
    assert_eq!(
        forwarded, served,
        "every forwarded reaction was stored by its owner"
    );
    assert_eq!(
        forwarded, 2,
        "the two nodes that do not own the group forward"
    );
    let page = g1
        .http
        .clone()
        .with_token(&alice.token)
        .history(&c, courier_sdk::HistoryQuery::default())
        .await
        .unwrap();
    let first = page.messages.iter().find(|m| m.seq == sent[0]).unwrap();
    assert_eq!(first.reactions[0]["count"], 3, "{:?}", first.reactions);

    // Alice's profile changes on gw1: bob, a fellow member on gw2, hears of it.
    g1.http
        .clone()
        .with_token(&alice.token)
        .update_profile(&serde_json::json!({"status": "from gw1"}))
        .await
        .unwrap();
    let notice = next_event(&mut b_events, |e| match e {
        Event::Presence(batch) => batch
            .changes
            .into_iter()
            .find(|c| c.user_id == alice.user_id && c.profile_changed),
        _ => None,
    })
    .await;
    assert!(notice.profile_only);

    // Carol asks to join through gw3: alice, the owner, is told on gw1.
    g3.http
        .clone()
        .with_token(&carol.token)
        .request_to_join(g, "hi from gw3")
        .await
        .unwrap();
    let asked = next_event(&mut a_events, |e| match e {
        Event::JoinRequested(j) => Some(j),
        _ => None,
    })
    .await;
    assert_eq!((asked.group_id, asked.user_id), (g, carol.user_id));
    assert_eq!(asked.message, "hi from gw3");
}
