//! Hostile and broken clients: each gets an error code or a clean close, and the
//! server keeps serving everyone else.

mod common;

use bytes::BufMut;
use common::{error_code, hello_frame, next_message, TestServer};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::ErrorCode;
use courier_sdk::{ConversationId, SdkError};

/// Proves the server still serves: a fresh pair exchanges a message.
async fn still_serving(t: &TestServer, tag: &str) {
    let a = t.user(&format!("{tag}-a")).await;
    let b = t.user(&format!("{tag}-b")).await;
    let (ca, _ea) = t.connect(&a, "d").await;
    let (_cb, mut eb) = t.connect(&b, "d").await;
    let c = ca.direct_with(b.user_id).unwrap();
    ca.send_text(&c, "still here").await.unwrap();
    assert_eq!(next_message(&mut eb).await.sender, a.user_id);
}

fn heartbeat(id: u64) -> Frame {
    Frame::new(id, Kind::Heartbeat(pb::Heartbeat { client_time_ms: 1 }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_hello_are_refused() {
    let t = TestServer::start().await;
    let mut raw = t.raw().await;
    raw.send(&heartbeat(5)).await;
    let frames = raw.until_closed().await;
    assert_eq!(frames.len(), 1);
    assert_eq!(error_code(&frames[0]), Some(ErrorCode::Unauthenticated));
    assert_eq!(frames[0].request_id, 5);
    still_serving(&t, "s1").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_versions_are_refused() {
    let t = TestServer::start().await;
    for (token, version, code) in [
        ("0".repeat(64), 1, ErrorCode::BadToken),
        ("not-a-token".to_string(), 1, ErrorCode::BadToken),
        (String::new(), 1, ErrorCode::Unauthenticated),
        ("0".repeat(64), 99, ErrorCode::UnsupportedVersion),
    ] {
        let mut raw = t.raw().await;
        raw.send(&hello_frame(&token, version)).await;
        let frames = raw.until_closed().await;
        assert_eq!(frames.len(), 1, "{token:?} v{version}");
        assert_eq!(error_code(&frames[0]), Some(code), "{token:?} v{version}");
    }
    // Through the SDK the same refusal is a typed error.
    let err =
        courier_sdk::Client::connect(t.server.tcp_addr(), &"f".repeat(64), Default::default())
            .await
            .err()
            .unwrap();
    assert_eq!(err.code(), Some(ErrorCode::BadToken));
    // And over HTTP, a 401 with the same code.
    let err = t
        .http
        .clone()
        .with_token("f".repeat(64))
        .me()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::Http {
                status: 401,
                code: 201,
                ..
            }
        ),
        "{err:?}"
    );
    still_serving(&t, "s2").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_frames_get_errors_and_the_session_goes_on() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mut raw = t.raw().await;
    assert!(matches!(
        raw.hello(&alice.token).await.kind,
        Some(Kind::Welcome(_))
    ));

    // A frame type from the future (field 99): UNKNOWN_FRAME, connection stays.
    let unknown = [0x08, 0x07, 0x98, 0x06, 0x01]; // request_id 7, field 99 = 1
    let mut wire = Vec::new();
    wire.put_u32(unknown.len() as u32);
    wire.extend_from_slice(&unknown);
    raw.send_bytes(&wire).await;
    let answer = raw.recv().await.unwrap();
    assert_eq!(error_code(&answer), Some(ErrorCode::UnknownFrame));
    assert_eq!(answer.request_id, 7);

    // Garbage inside a well-formed length prefix: MALFORMED_FRAME, connection stays.
    let mut wire = Vec::new();
    wire.put_u32(5);
    wire.extend_from_slice(&[0xff; 5]);
    raw.send_bytes(&wire).await;
    assert_eq!(
        error_code(&raw.recv().await.unwrap()),
        Some(ErrorCode::MalformedFrame)
    );

    // A Send whose body is not a MessageBody, or whose text is not UTF-8: refused
    // with MALFORMED_FRAME for that request, nothing stored, connection stays.
    let bob = t.user("bob").await;
    let conversation = ConversationId::direct(alice.user_id, bob.user_id)
        .unwrap()
        .to_string();
    for (i, body) in [&[0xff, 0xff][..], &[0x52, 0x03, 0x0a, 0x01, 0xc3][..]]
        .into_iter()
        .enumerate()
    {
        let mut send = Vec::new();
        for (tag, bytes) in [(1u8, &b"cm"[..]), (2, conversation.as_bytes()), (3, body)] {
            send.push((tag << 3) | 2);
            send.push(bytes.len() as u8);
            send.extend_from_slice(bytes);
        }
        let request_id = 20 + i as u8;
        let mut payload = vec![0x08, request_id, 0x72, send.len() as u8];
        payload.extend_from_slice(&send);
        let mut wire = Vec::new();
        wire.put_u32(payload.len() as u32);
        wire.extend_from_slice(&payload);
        raw.send_bytes(&wire).await;
        let answer = raw.recv().await.unwrap();
        assert_eq!(error_code(&answer), Some(ErrorCode::MalformedFrame), "{i}");
        assert_eq!(answer.request_id, u64::from(request_id));
    }
    let history = t
        .http_as(&alice)
        .history(
            &ConversationId::direct(alice.user_id, bob.user_id).unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(history.messages.is_empty());

    // A server-only frame from a client: UNEXPECTED_FRAME.
    raw.send(&Frame::new(9, Kind::SendAck(pb::SendAck::default())))
        .await;
    assert_eq!(
        error_code(&raw.recv().await.unwrap()),
        Some(ErrorCode::UnexpectedFrame)
    );

    raw.send(&heartbeat(11)).await;
    let ack = raw.recv().await.unwrap();
    assert!(matches!(ack.kind, Some(Kind::HeartbeatAck(_))));
    assert_eq!(ack.request_id, 11);

    // Past the bad-frame budget the session is closed with PROTOCOL_VIOLATION.
    for _ in 0..20 {
        raw.send_bytes(&wire).await;
    }
    let frames = raw.until_closed().await;
    assert_eq!(
        error_code(frames.last().unwrap()),
        Some(ErrorCode::ProtocolViolation)
    );
    still_serving(&t, "s3").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_the_connection_without_reading_them() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    // Before authentication.
    let mut raw = t.raw().await;
    raw.send_bytes(&u32::MAX.to_be_bytes()).await;
    let frames = raw.until_closed().await;
    assert_eq!(error_code(&frames[0]), Some(ErrorCode::FrameTooLarge));
    // After authentication.
    let mut raw = t.raw().await;
    raw.hello(&alice.token).await;
    let mut wire = Vec::new();
    wire.put_u32(10 * 1024 * 1024);
    wire.extend_from_slice(&[0u8; 1024]);
    raw.send_bytes(&wire).await;
    let frames = raw.until_closed().await;
    assert_eq!(
        error_code(frames.last().unwrap()),
        Some(ErrorCode::FrameTooLarge)
    );
    still_serving(&t, "s4").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_frame_then_silence_is_timed_out() {
    let t = TestServer::start_with(|c| {
        c.handshake_timeout_ms = 300;
        c.heartbeat_interval_ms = 200;
        c.idle_timeout_ms = 600;
    })
    .await;
    let alice = t.user("alice").await;
    // Half a Hello, then nothing: the handshake timer ends it.
    let mut raw = t.raw().await;
    raw.send_bytes(&[0, 0, 0, 50, 1, 2]).await;
    let frames = raw.until_closed().await;
    assert_eq!(error_code(&frames[0]), Some(ErrorCode::HandshakeTimeout));
    // Authenticated, then half a frame: the idle timer ends it.
    let mut raw = t.raw().await;
    raw.hello(&alice.token).await;
    raw.send_bytes(&[0, 0, 0, 50, 1, 2]).await;
    let frames = raw.until_closed().await;
    assert_eq!(
        error_code(frames.last().unwrap()),
        Some(ErrorCode::IdleTimeout)
    );
    // An SDK client heartbeats on the server's schedule and is not timed out.
    let bob = t.user("bob").await;
    let (client, _events) = t.connect(&alice, "phone").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let c = client.direct_with(bob.user_id).unwrap();
    client.send_text(&c, "alive").await.unwrap();
    still_serving(&t, "s5").await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sends_get_specific_codes() {
    let t = TestServer::start_with(|c| c.max_text_bytes = 100).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _e) = t.connect(&alice, "phone").await;
    let code = |r: Result<courier_sdk::SendReceipt, SdkError>| r.unwrap_err().code();

    let nobody = ConversationId::direct(alice.user_id, 999_999).unwrap();
    assert_eq!(
        code(a.send_text(&nobody, "hi").await),
        Some(ErrorCode::UnknownUser)
    );
    let others = ConversationId::direct(bob.user_id, 999_998).unwrap();
    assert_eq!(
        code(a.send_text(&others, "hi").await),
        Some(ErrorCode::Forbidden)
    );
    let c = a.direct_with(bob.user_id).unwrap();
    assert_eq!(
        code(a.send_text(&c, "x".repeat(101)).await),
        Some(ErrorCode::TextTooLong)
    );
    assert_eq!(
        code(a.send_text(&c, "").await),
        Some(ErrorCode::InvalidArgument)
    );
    let group = ConversationId::Group(42);
    assert_eq!(
        code(a.send_text(&group, "hi").await),
        Some(ErrorCode::UnknownConversation)
    );
    let system = pb::MessageBody {
        content: Some(pb::message_body::Content::System(pb::SystemEvent::default())),
    };
    assert_eq!(
        code(a.send(&c, system, "sys".into()).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(a.send(&c, pb::MessageBody::text("x"), String::new()).await),
        Some(ErrorCode::InvalidArgument)
    );
    let bad_conv = a
        .request(Kind::Send(pb::Send {
            client_msg_id: "x".into(),
            conversation: "d:2:1".into(),
            body: Some(pb::MessageBody::text("x")),
            reply_to_seq: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_conv.code(), Some(ErrorCode::InvalidArgument));
    // None of it hurt the session.
    assert_eq!(a.send_text(&c, "fine").await.unwrap().seq, 1);
    t.stop().await;
}
