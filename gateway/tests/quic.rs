//! QUIC (and TLS) end to end, and through a lossy, delayed, reordering UDP proxy:
//! exactly once and in order, blackouts survived, address changes migrated.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::udp_proxy::{Impairments, UdpProxy};
use common::{users, TestServer, WAIT};
use courier_sdk::{
    ClientOptions, Connector, ConversationId, ErrorCode, LoginInfo, MemoryCursorStore,
    QuicConnector, Session, SessionEvent, SessionEvents, SessionOptions, Trust,
};

fn options(device: &str) -> SessionOptions {
    SessionOptions {
        client: ClientOptions {
            device_id: device.into(),
            ..ClientOptions::default()
        },
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        cursors: Arc::new(MemoryCursorStore::default()),
        ..SessionOptions::default()
    }
}

fn pin(t: &TestServer) -> Trust {
    Trust::Pinned(t.server.cert_fingerprint().unwrap().to_owned())
}

async fn quic_session(
    t: &TestServer,
    who: &LoginInfo,
    via: SocketAddr,
) -> (Session, SessionEvents, QuicConnector) {
    let quic = QuicConnector::new(&pin(t), "localhost", Duration::from_secs(1)).unwrap();
    let (s, e) = Session::start_with(
        Connector::Quic(quic.clone(), via),
        &who.token,
        options("phone"),
    )
    .await
    .unwrap();
    (s, e, quic)
}

/// Receives `n` messages from `from`, checking order and uniqueness; returns
/// per-message latency using the send instants recorded under each message's index.
async fn receive(
    events: &mut SessionEvents,
    from: u64,
    n: usize,
    sent: &Mutex<Vec<Option<Instant>>>,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(n);
    let mut next = 0usize;
    tokio::time::timeout(Duration::from_secs(120), async {
        while next < n {
            match events.next().await {
                Some(SessionEvent::Message(m)) if m.sender == from => {
                    let text = m.body.as_ref().unwrap().as_text().unwrap();
                    let i: usize = text.split(' ').nth(1).unwrap().parse().unwrap();
                    assert_eq!(
                        i, next,
                        "message {i} arrived when {next} was due: lost, doubled or reordered"
                    );
                    let at = sent.lock().unwrap()[i].expect("sent before received");
                    latencies.push(at.elapsed());
                    next += 1;
                }
                Some(SessionEvent::Ended(code)) => panic!("session ended: {code:?}"),
                Some(_) => {}
                None => panic!("session gone"),
            }
        }
    })
    .await
    .expect("all messages within two minutes");
    latencies
}

/// Sends `n` numbered texts, 32 in flight, recording when each was sent.
async fn send_all(
    session: Session,
    c: ConversationId,
    tag: &'static str,
    n: usize,
    sent: Arc<Mutex<Vec<Option<Instant>>>>,
) {
    let mut tasks = futures_util::stream::FuturesOrdered::new();
    use futures_util::StreamExt;
    for i in 0..n {
        sent.lock().unwrap()[i] = Some(Instant::now());
        // Queued one by one (so stored in order), acknowledged concurrently.
        let ack = session
            .submit_send(
                &c,
                courier_sdk::pb::MessageBody::text(format!("{tag} {i}")),
                courier_sdk::new_client_msg_id(),
            )
            .await
            .unwrap();
        tasks.push_back(async move { ack.await.unwrap() });
        if tasks.len() >= 32 {
            tasks.next().await;
        }
    }
    while tasks.next().await.is_some() {}
}

fn percentile(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_tls_connect_with_a_pinned_certificate() {
    let t = TestServer::start_with(|c| c.tls_addr = "127.0.0.1:0".into()).await;
    let p = users(&t, "q", 2).await;
    let quic_addr = t.server.quic_addr().unwrap();
    let (a, mut a_events, _q) = quic_session(&t, &p[0], quic_addr).await;
    let tls = Connector::Tls {
        addr: t.server.tls_addr().unwrap(),
        trust: pin(&t),
        server_name: "localhost".into(),
    };
    let (b, mut b_events) = Session::start_with(tls, &p[1].token, options("laptop"))
        .await
        .unwrap();
    let c = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();
    a.send_text(&c, "over quic").await.unwrap();
    b.send_text(&c, "over tls").await.unwrap();
    for (events, expect) in [(&mut b_events, "over quic"), (&mut a_events, "over tls")] {
        let m = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(SessionEvent::Message(m)) = events.next().await {
                    return m;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(m.body.unwrap().as_text(), Some(expect));
    }
    // A second connection through the same endpoint resumes with 0-RTT.
    let quic = QuicConnector::new(&pin(&t), "localhost", Duration::from_secs(1)).unwrap();
    let (first, _e1) = quic
        .connect(quic_addr, &p[0].token, ClientOptions::default())
        .await
        .unwrap();
    drop(first);
    assert_eq!(quic.zero_rtt_connections(), 0);
    let (again, _e2) = quic
        .connect(quic_addr, &p[0].token, ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(quic.zero_rtt_connections(), 1, "the reconnect used 0-RTT");
    assert_eq!(again.user_id(), p[0].user_id);
    // A wrong pin is refused.
    let wrong = QuicConnector::new(
        &Trust::Pinned("00".repeat(32)),
        "localhost",
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(wrong
        .connect(quic_addr, &p[0].token, ClientOptions::default())
        .await
        .is_err());
    // Bad tokens over QUIC get the same code as over TCP.
    let quic = QuicConnector::new(&pin(&t), "localhost", Duration::from_secs(1)).unwrap();
    let err = quic
        .connect(quic_addr, &"f".repeat(64), ClientOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::BadToken));
    t.stop().await;
}

/// A restarted server cannot read tickets issued before the restart, so it refuses
/// the early data of a resuming client: the client must log in over 1-RTT instead
/// of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_0rtt_attempt_falls_back_to_1rtt() {
    let dir = tempfile::tempdir().unwrap();
    let server = courier_gateway::Server::start(courier_gateway::Config::for_tests(dir.path()))
        .await
        .unwrap();
    let http = courier_sdk::HttpClient::new(format!("http://{}", server.http_addr()));
    http.register("zrtt", "password123").await.unwrap();
    let login = http.login("zrtt", "password123").await.unwrap();
    let quic_addr = server.quic_addr().unwrap();
    let trust = Trust::Pinned(server.cert_fingerprint().unwrap().to_owned());
    let quic = QuicConnector::new(&trust, "localhost", Duration::from_secs(1)).unwrap();
    let (first, _events) = quic
        .connect(quic_addr, &login.token, ClientOptions::default())
        .await
        .unwrap();
    drop(first);
    server.shutdown().await;

    // Same data dir (same certificate and accounts), fresh ticket keys. The client
    // keeps its ticket per server name, so it tries 0-RTT at the new port too.
    let restarted = courier_gateway::Server::start(courier_gateway::Config::for_tests(dir.path()))
        .await
        .unwrap();
    let (again, _events) = quic
        .connect(
            restarted.quic_addr().unwrap(),
            &login.token,
            ClientOptions::default(),
        )
        .await
        .expect("a refused 0-RTT attempt is retried over 1-RTT");
    assert_eq!(again.user_id(), login.user_id);
    assert_eq!(quic.zero_rtt_connections(), 0, "the early data was refused");
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_each_way_over_lossy_quic_arrive_once_in_order() {
    const N: usize = 1000;
    let t = TestServer::start().await;
    let p = users(&t, "l", 4).await;
    let quic_addr = t.server.quic_addr().unwrap();
    let lossy = Impairments {
        loss: 0.10,
        delay: Duration::from_millis(100),
        jitter: Duration::from_millis(10),
        duplicate: 0.01,
    };
    let pa = UdpProxy::start(quic_addr, lossy).await;
    let pb = UdpProxy::start(quic_addr, lossy).await;
    let (a, mut a_events, _qa) = quic_session(&t, &p[0], pa.addr).await;
    let (b, mut b_events, _qb) = quic_session(&t, &p[1], pb.addr).await;
    let c = ConversationId::direct(p[0].user_id, p[1].user_id).unwrap();
    let sent_a = Arc::new(Mutex::new(vec![None; N]));
    let sent_b = Arc::new(Mutex::new(vec![None; N]));
    let started = Instant::now();
    let (ua, ub) = (p[0].user_id, p[1].user_id);
    let ra = {
        let sent_b = sent_b.clone();
        tokio::spawn(async move { receive(&mut a_events, ub, N, &sent_b).await })
    };
    let rb = {
        let sent_a = sent_a.clone();
        tokio::spawn(async move { receive(&mut b_events, ua, N, &sent_a).await })
    };
    tokio::join!(
        send_all(a.clone(), c, "a", N, sent_a.clone()),
        send_all(b.clone(), c, "b", N, sent_b.clone())
    );
    let mut quic_latency = ra.await.unwrap();
    quic_latency.extend(rb.await.unwrap());
    let quic_secs = started.elapsed().as_secs_f64();
    let history = t.http_as(&p[0]).history_all(&c, 0).await.unwrap();
    assert_eq!(history.len(), 2 * N, "each message stored once");

    // The same shape over TCP with the same delay (a user-space TCP proxy cannot drop
    // segments: the kernel retransmits below it, so this is TCP without loss).
    let ta = TcpProxy::start(t.server.tcp_addr(), Duration::from_millis(100)).await;
    let tb = TcpProxy::start(t.server.tcp_addr(), Duration::from_millis(100)).await;
    let (c2, d2) = (&p[2], &p[3]);
    let (sa, mut ea) = Session::start(ta.addr.to_string(), &c2.token, options("phone"))
        .await
        .unwrap();
    let (sb, mut eb) = Session::start(tb.addr.to_string(), &d2.token, options("phone"))
        .await
        .unwrap();
    let c_tcp = ConversationId::direct(c2.user_id, d2.user_id).unwrap();
    let sent_c = Arc::new(Mutex::new(vec![None; N]));
    let sent_d = Arc::new(Mutex::new(vec![None; N]));
    let started = Instant::now();
    let (uc, ud) = (c2.user_id, d2.user_id);
    let rc = {
        let sent_d = sent_d.clone();
        tokio::spawn(async move { receive(&mut ea, ud, N, &sent_d).await })
    };
    let rd = {
        let sent_c = sent_c.clone();
        tokio::spawn(async move { receive(&mut eb, uc, N, &sent_c).await })
    };
    tokio::join!(
        send_all(sa.clone(), c_tcp, "c", N, sent_c),
        send_all(sb.clone(), c_tcp, "d", N, sent_d)
    );
    let mut tcp_latency = rc.await.unwrap();
    tcp_latency.extend(rd.await.unwrap());
    let tcp_secs = started.elapsed().as_secs_f64();
    println!(
        "QUIC, 10% loss + 100 ms each way (+10 ms jitter, 1% duplicates): 2x{N} messages in {quic_secs:.1} s, \
         delivery p50 {:.0} ms, p99 {:.0} ms | TCP, 100 ms each way, no loss: {tcp_secs:.1} s, p50 {:.0} ms, p99 {:.0} ms",
        percentile(quic_latency.clone(), 0.5),
        percentile(quic_latency, 0.99),
        percentile(tcp_latency.clone(), 0.5),
        percentile(tcp_latency, 0.99),
    );
    drop((a, b, sa, sb));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_survives_a_blackout_and_migrates_when_the_address_changes() {
    let t = TestServer::start().await;
    let p = users(&t, "m", 2).await;
    let proxy = UdpProxy::start(t.server.quic_addr().unwrap(), Impairments::default()).await;
    let (a, mut a_events, quic) = quic_session(&t, &p[0], proxy.addr).await;
    let (b, _be) = t.connect(&p[1], "phone").await;
    let c = b.direct_with(p[0].user_id).unwrap();
    let sent = Mutex::new(vec![None; 600]);
    let mark = |range: std::ops::Range<usize>| {
        for i in range {
            sent.lock().unwrap()[i] = Some(Instant::now());
        }
    };

    // Five seconds of nothing at all: the QUIC connection outlives it.
    proxy.blackout(Duration::from_secs(5));
    let back = Instant::now() + Duration::from_secs(5);
    mark(0..200);
    for i in 0..200 {
        b.send_text(&c, format!("b {i}")).await.unwrap();
    }
    let queued = a.send_text(&c, "during the blackout");
    let (latency, receipt) = tokio::join!(receive(&mut a_events, p[1].user_id, 200, &sent), queued);
    receipt.unwrap();
    println!(
        "quic blackout 5 s: network back to all 200 messages handed over {:.0} ms (no reconnect)",
        Instant::now().saturating_duration_since(back).as_secs_f64() * 1000.0
    );
    assert_eq!(latency.len(), 200);

    // The NAT rebinds (the proxy's port towards the server changes) and the client
    // itself moves to a new local port: same session, no new login.
    let before = t.admin().stats().await.unwrap()["presence"]["events_in"]
        .as_u64()
        .unwrap();
    proxy.rebind().await;
    mark(200..300);
    for i in 200..300 {
        b.send_text(&c, format!("b {i}")).await.unwrap();
    }
    let old = quic.local_addr().unwrap();
    quic.rebind().unwrap();
    assert_ne!(quic.local_addr().unwrap().port(), old.port());
    mark(300..400);
    for i in 300..400 {
        b.send_text(&c, format!("b {i}")).await.unwrap();
    }
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, async {
        while rest.len() < 200 {
            match a_events.next().await {
                Some(SessionEvent::Message(m)) if m.sender == p[1].user_id => rest.push(m.seq),
                Some(SessionEvent::Disconnected) => {
                    panic!("the session reconnected instead of migrating")
                }
                Some(_) => {}
                None => panic!("gone"),
            }
        }
    })
    .await
    .unwrap();
    assert!(rest.windows(2).all(|w| w[1] == w[0] + 1));
    let after = t.admin().stats().await.unwrap()["presence"]["events_in"]
        .as_u64()
        .unwrap();
    assert_eq!(
        before, after,
        "no offline/online edge: the same session carried on"
    );
    a.send_text(&c, "after the move").await.unwrap();
    t.stop().await;
}
