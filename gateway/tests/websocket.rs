//! WebSocket sessions at `GET /v1/ws`: the SDK over WebSocket chatting with a TCP
//! client, a session that reconnects over WebSocket, and an independent WebSocket
//! client (tokio-tungstenite, as a browser would be) checking the handshake, the
//! limits and the close codes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::proxy::TcpProxy;
use common::{next_message, next_text, TestServer, WAIT};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{decode_frame, encode_frame, ErrorCode, PROTOCOL_VERSION};
use courier_sdk::{Client, ClientOptions, Connector, Session, SessionEvent, SessionOptions};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn ws_url(t: &TestServer) -> String {
    format!("ws://{}/v1/ws", t.server.http_addr())
}

fn options(device: &str) -> ClientOptions {
    ClientOptions {
        device_id: device.to_owned(),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn the_sdk_over_websocket_chats_with_a_tcp_client_both_ways() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, mut a_events) = Client::connect_ws(&ws_url(&t), &alice.token, options("alice-web"))
        .await
        .unwrap();
    let (b, mut b_events) = t.connect(&bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();

    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(
            a.send_text(&c, format!("from the web {i}"))
                .await
                .unwrap()
                .seq,
        );
    }
    for (i, seq) in sent.iter().enumerate() {
        let m = next_text(&mut b_events).await;
        assert_eq!(m.seq, *seq);
        assert_eq!(
            m.body.unwrap().as_text(),
            Some(format!("from the web {i}").as_str())
        );
    }
    // A burst the other way: the server writes many frames at once.
    let mut replies = Vec::new();
    for i in 0..200 {
        replies.push(
            b.submit_send(
                &c,
                pb::MessageBody::text(format!("re {i}")),
                courier_sdk::new_client_msg_id(),
            )
            .await
            .unwrap(),
        );
    }
    let mut seqs = Vec::new();
    for r in replies {
        seqs.push(r.await.unwrap().seq);
    }
    for seq in &seqs {
        assert_eq!(next_message(&mut a_events).await.seq, *seq);
    }
    // History over the WebSocket.
    let page = a
        .pull_history(&c, pb::Direction::Backward, 0, 100)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 100);
    assert_eq!(page.messages.last().unwrap().seq, *seqs.last().unwrap());

    let metrics = t.admin().metrics().await.unwrap();
    assert!(
        metrics.contains("courier_sessions{transport=\"websocket\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_session_over_websocket_resends_and_resyncs_after_its_connection_drops() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let proxy = TcpProxy::start(t.server.http_addr(), Duration::ZERO).await;
    let session_options = SessionOptions {
        client: options("alice-web"),
        ..SessionOptions::default()
    };
    let url = format!("ws://{}/v1/ws", proxy.addr);
    let (a, mut a_events) =
        Session::start_with(Connector::WebSocket(url), &alice.token, session_options)
            .await
            .unwrap();
    let (b, _b_events) = t.connect(&bob, "bob-phone").await;
    let c = b.direct_with(alice.user_id).unwrap();
    let mut texts = Vec::new();
    let text_of = async |events: &mut courier_sdk::SessionEvents| loop {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("events in time")
        {
            Some(SessionEvent::Message(m)) => {
                if let Some(text) = m.body.as_ref().and_then(|b| b.as_text()) {
                    return (m.seq, text.to_owned());
                }
            }
            Some(_) => {}
            None => panic!("the session ended"),
        }
    };
    for i in 0..10 {
        b.send_text(&c, format!("before {i}")).await.unwrap();
    }
    while texts.len() < 10 {
        texts.push(text_of(&mut a_events).await);
    }
    // The network drops: bob writes on, alice writes into the outage.
    proxy.blackout(Duration::from_millis(500));
    for i in 0..10 {
        b.send_text(&c, format!("after {i}")).await.unwrap();
    }
    let during = a
        .submit_send(
            &c,
            pb::MessageBody::text("during"),
            courier_sdk::new_client_msg_id(),
        )
        .await
        .unwrap();
    while texts.len() < 20 {
        texts.push(text_of(&mut a_events).await);
    }
    let seqs: Vec<u64> = texts.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(texts[10].1, "after 0");
    assert_eq!(
        during.await.unwrap().seq,
        21,
        "stored once, after the reconnect"
    );
}

fn hello(token: &str) -> Message {
    let frame = Frame::new(
        1,
        Kind::Hello(pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            device_id: "raw-web".into(),
            platform: 0,
            token: token.into(),
            client_version: "test".into(),
            cursors: Vec::new(),
        }),
    );
    Message::Binary(encode_frame(&frame).slice(4..))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_ws(t: &TestServer) -> Ws {
    let mut request = ws_url(t).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "courier.v1".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "courier.v1",
        "the subprotocol is chosen"
    );
    ws
}

/// The next binary message as a frame, answering nothing else.
async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Binary(b))) => return decode_frame(b).unwrap(),
            Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// The close the server sends, skipping frames before it.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(c))) => return c.map(|c| c.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn an_independent_websocket_client_gets_the_same_frames_limits_and_closes() {
    let t = TestServer::start_with(|c| {
        c.max_frame_bytes = 4096;
        c.max_text_bytes = 1024;
    })
    .await;
    let alice = t.user("alice").await;

    // Hello, Welcome, and a ping answered by the WebSocket layer.
    let mut ws = raw_ws(&t).await;
    ws.send(hello(&alice.token)).await.unwrap();
    let welcome = next_frame(&mut ws).await;
    assert!(
        matches!(welcome.kind, Some(Kind::Welcome(_))),
        "{welcome:?}"
    );
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"are you there")));

    // An unknown frame kind is answered as on TCP.
    ws.send(Message::Binary(Bytes::from_static(&[
        0x08, 0x07, 0xfa, 0x3e, 0x00,
    ])))
    .await
    .unwrap();
    let answer = next_frame(&mut ws).await;
    assert!(matches!(answer.kind, Some(Kind::Error(_))), "{answer:?}");

    // A message past max_frame_bytes: FRAME_TOO_LARGE, then close 1009.
    ws.send(Message::Binary(Bytes::from(vec![0u8; 10_000])))
        .await
        .unwrap();
    let mut codes = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                let f = decode_frame(b).unwrap();
                match f.kind {
                    Some(Kind::Error(e)) => codes.push(e.code),
                    Some(Kind::Kick(k)) => codes.push(k.code),
                    _ => {}
                }
            }
            Some(Ok(Message::Close(c))) => {
                assert_eq!(c.map(|c| c.code), Some(CloseCode::Size));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        codes.contains(&(ErrorCode::FrameTooLarge as i32)),
        "{codes:?}"
    );

    // Text is not Courier's: close 1003.
    let mut ws = raw_ws(&t).await;
    ws.send(Message::text("hello?")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));

    // A bad token: the handshake's error, as on TCP.
    let mut ws = raw_ws(&t).await;
    ws.send(hello("not-a-token")).await.unwrap();
    let refused = next_frame(&mut ws).await;
    match refused.kind {
        Some(Kind::Error(e)) => assert_eq!(e.code, ErrorCode::BadToken as i32),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn upgrades_are_checked_and_origins_restricted_when_configured() {
    let t = TestServer::start_with(|c| {
        c.ws_allowed_origins = "https://chat.example.com, https://other.example.com".into()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/ws", t.server.http_addr());
    // A plain GET: 426 Upgrade Required.
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 426);

    let attempt = |origin: &'static str| {
        let mut request = ws_url(&t).into_client_request().unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match attempt("https://evil.example.net").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let (mut ws, _) = attempt("https://other.example.com").await.unwrap();
    let alice = t.user("alice").await;
    ws.send(hello(&alice.token)).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws).await.kind,
        Some(Kind::Welcome(_))
    ));

    // Off: /v1/ws is an unknown route.
    let off = TestServer::start_with(|c| c.ws_enabled = false).await;
    let url = format!("http://{}/v1/ws", off.server.http_addr());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let _ = Duration::ZERO;
}

/// The TLS listener: a client that chooses `http/1.1` by ALPN (a browser's `https://`
/// and `wss://`) gets the HTTP API and WebSocket sessions; one that chooses
/// `courier/1` still speaks frames.
#[tokio::test]
async fn the_tls_listener_serves_wss_and_https_to_clients_that_choose_http() {
    let t = TestServer::start_with(|c| c.tls_addr = "127.0.0.1:0".into()).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let tls_addr = t.server.tls_addr().unwrap();
    let trust = courier_sdk::Trust::Pinned(t.server.cert_fingerprint().unwrap().to_owned());

    let (a, _a_events) = courier_sdk::connect_wss(
        &format!("wss://{tls_addr}/v1/ws"),
        &trust,
        "localhost",
        &alice.token,
        options("alice-web"),
    )
    .await
    .unwrap();
    let (_b, mut b_events) = courier_sdk::connect_tls(
        tls_addr,
        &trust,
        "localhost",
        &bob.token,
        options("bob-laptop"),
    )
    .await
    .unwrap();
    let c = a.direct_with(bob.user_id).unwrap();
    let sent = a.send_text(&c, "over wss").await.unwrap();
    let m = next_text(&mut b_events).await;
    assert_eq!(
        (m.seq, m.body.unwrap().as_text()),
        (sent.seq, Some("over wss"))
    );

    // HTTPS: the API on the same port.
    let mut crypto = courier_sdk::client_crypto(&trust).unwrap();
    crypto.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(crypto));
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut https = connector.connect(name, tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    https
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = https.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
