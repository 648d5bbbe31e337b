//! Property tests: every frame type survives encode -> codec -> decode unchanged,
//! also when the wire bytes arrive in arbitrary pieces.

use bytes::{Bytes, BytesMut};
use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{decode_frame, encode_frame, FrameCodec};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn conv() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..1000, 1000u64..2000).prop_map(|(a, b)| format!("d:{a}:{b}")),
        any::<u64>().prop_map(|g| format!("g:{g}")),
    ]
}

fn body() -> impl Strategy<Value = pb::MessageBody> {
    use pb::message_body::Content;
    let media = (
        0i32..6,
        text(),
        text(),
        any::<u64>(),
        "[0-9a-f]{64}",
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::option::of((text(), any::<u64>(), any::<u32>())),
        text(),
    )
        .prop_map(
            |(kind, url, mime, size, sha256, width, height, duration_ms, thumb, name)| {
                Content::Media(pb::Media {
                    kind,
                    url,
                    mime,
                    size,
                    sha256,
                    width,
                    height,
                    duration_ms,
                    thumbnail: thumb.map(|(url, size, width)| pb::Thumbnail {
                        url,
                        mime: "image/jpeg".into(),
                        size,
                        width,
                        height: width / 2,
                        sha256: String::new(),
                    }),
                    name,
                    custom_kind: String::new(),
                    caption: String::new(),
                })
            },
        );
    let system = prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(user_id, by_user)| {
            pb::system_event::Event::MemberJoined(pb::MemberJoined { user_id, by_user })
        }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(user_id, by_user, removed)| {
            pb::system_event::Event::MemberLeft(pb::MemberLeft {
                user_id,
                by_user,
                removed,
            })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(seq, by_user)| {
            pb::system_event::Event::MessageRecalled(pb::MessageRecalled { seq, by_user })
        }),
        (text(), any::<u64>()).prop_map(|(name, by_user)| {
            pb::system_event::Event::GroupRenamed(pb::GroupRenamed { name, by_user })
        }),
    ]
    .prop_map(|event| Content::System(pb::SystemEvent { event: Some(event) }));
    prop_oneof![
        (text(), proptest::collection::vec(any::<u64>(), 0..3)).prop_map(|(text, mentions)| {
            let mention_all = mentions.len() % 2 == 1;
            Content::Text(pb::Text {
                text,
                mentions,
                mention_all,
            })
        }),
        media,
        (text(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(r#type, data)| {
            Content::Custom(pb::Custom {
                r#type,
                data: Bytes::from(data),
            })
        }),
        system,
    ]
    .prop_map(|content| pb::MessageBody {
        content: Some(content),
    })
}

fn message() -> impl Strategy<Value = pb::Message> {
    (
        conv(),
        any::<u64>(),
        any::<u64>(),
        text(),
        text(),
        any::<u64>(),
        body(),
        any::<bool>(),
    )
        .prop_map(
            |(
                conversation,
                seq,
                sender,
                sender_device,
                client_msg_id,
                server_time_ms,
                body,
                recalled,
            )| {
                pb::Message {
                    conversation,
                    seq,
                    sender,
                    sender_device,
                    client_msg_id,
                    server_time_ms,
                    body: Some(body),
                    reply_to_seq: seq / 2,
                    recalled: recalled.then_some(pb::Recalled {
                        by_user: sender,
                        at_ms: server_time_ms,
                    }),
                    edited: (!recalled && seq % 2 == 1).then_some(pb::Edited {
                        by_user: sender,
                        at_ms: server_time_ms,
                        count: 1 + (seq % 7) as u32,
                        event_seq: seq.wrapping_add(1),
                    }),
                    reactions: if seq % 3 == 0 {
                        vec![pb::ReactionCount {
                            emoji: "👍".into(),
                            count: seq % 1000,
                            mine: recalled,
                        }]
                    } else {
                        Vec::new()
                    },
                }
            },
        )
}

fn cursor() -> impl Strategy<Value = pb::Cursor> {
    (conv(), any::<u64>()).prop_map(|(conversation, seq)| pb::Cursor { conversation, seq })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (
            any::<u32>(),
            text(),
            0i32..7,
            text(),
            proptest::collection::vec(cursor(), 0..4)
        )
            .prop_map(|(protocol_version, device_id, platform, token, cursors)| {
                Kind::Hello(pb::Hello {
                    protocol_version,
                    device_id,
                    platform,
                    token,
                    client_version: "sdk/1".into(),
                    cursors,
                })
            }),
        (any::<u64>(), text(), any::<u64>(), any::<u32>()).prop_map(
            |(user_id, session_id, server_time_ms, n)| Kind::Welcome(pb::Welcome {
                protocol_version: 1,
                user_id,
                session_id,
                server_time_ms,
                heartbeat_interval_ms: n,
                idle_timeout_ms: n.wrapping_mul(3),
                max_frame_bytes: n,
                max_text_bytes: n / 2,
                user_name: "alice".into(),
            })
        ),
        any::<u64>().prop_map(|client_time_ms| Kind::Heartbeat(pb::Heartbeat { client_time_ms })),
        any::<u64>()
            .prop_map(|server_time_ms| Kind::HeartbeatAck(pb::HeartbeatAck { server_time_ms })),
        (text(), conv(), body(), any::<u64>()).prop_map(
            |(client_msg_id, conversation, body, reply_to_seq)| {
                Kind::Send(pb::Send {
                    client_msg_id,
                    conversation,
                    body: Some(body),
                    reply_to_seq,
                })
            }
        ),
        (text(), conv(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
            |(client_msg_id, conversation, seq, server_time_ms, duplicate)| Kind::SendAck(
                pb::SendAck {
                    client_msg_id,
                    conversation,
                    seq,
                    server_time_ms,
                    duplicate,
                }
            )
        ),
        message().prop_map(|m| Kind::Deliver(pb::Deliver { message: Some(m) })),
        (conv(), any::<u64>()).prop_map(|(conversation, seq)| Kind::DeliveryAck(pb::DeliveryAck {
            conversation,
            seq
        })),
        (
            proptest::collection::vec(cursor(), 0..5),
            any::<u32>(),
            text()
        )
            .prop_map(|(cursors, limit, page_token)| {
                Kind::SyncRequest(pb::SyncRequest {
                    cursors,
                    limit,
                    page_token,
                    view_version: u64::from(limit) * 3,
                })
            }),
        (
            proptest::collection::vec(
                (conv(), any::<u64>(), proptest::option::of(message())),
                0..4
            ),
            any::<u64>()
        )
            .prop_map(
                |(states, server_time_ms)| Kind::SyncResponse(pb::SyncResponse {
                    conversations: states
                        .into_iter()
                        .map(
                            |(conversation, last_seq, last_message)| pb::ConversationState {
                                conversation,
                                last_seq,
                                read_seq: last_seq / 2,
                                unread: last_seq - last_seq / 2,
                                new_since_cursor: last_seq / 3,
                                last_message,
                                kind: 1,
                                mentions: last_seq / 5,
                                cleared_seq: last_seq / 7,
                                hidden: vec![last_seq / 7 + 1, last_seq / 6 + 2],
                            }
                        )
                        .collect(),
                    next_page_token: String::new(),
                    server_time_ms,
                    view_version: server_time_ms / 3,
                })
            ),
        (conv(), 0i32..3, any::<u64>(), any::<u32>()).prop_map(
            |(conversation, direction, cursor, limit)| {
                Kind::PullHistory(pb::PullHistory {
                    conversation,
                    direction,
                    cursor,
                    limit,
                })
            }
        ),
        (
            conv(),
            proptest::collection::vec(message(), 0..4),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(conversation, messages, has_more, retained_from_seq)| {
                Kind::HistoryPage(pb::HistoryPage {
                    conversation,
                    messages,
                    has_more,
                    retained_from_seq,
                })
            }),
        (conv(), any::<u64>())
            .prop_map(|(conversation, seq)| Kind::Recall(pb::Recall { conversation, seq })),
        (conv(), any::<u64>(), any::<u64>()).prop_map(|(conversation, seq, event_seq)| {
            Kind::RecallAck(pb::RecallAck {
                conversation,
                seq,
                event_seq,
            })
        }),
        (conv(), any::<u64>())
            .prop_map(|(conversation, seq)| Kind::ReadReport(pb::ReadReport { conversation, seq })),
        (conv(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(conversation, reader, seq, readers)| {
                Kind::ReadReceipt(pb::ReadReceipt {
                    conversation,
                    reader,
                    seq,
                    readers,
                })
            }
        ),
        proptest::collection::vec((any::<u64>(), any::<bool>(), any::<u64>()), 0..8).prop_map(
            |changes| {
                Kind::PresenceBatch(pb::PresenceBatch {
                    changes: changes
                        .into_iter()
                        .map(|(user_id, online, changed_at_ms)| pb::PresenceChange {
                            user_id,
                            online,
                            changed_at_ms,
                            profile_changed: online,
                            profile_only: !online,
                        })
                        .collect(),
                })
            }
        ),
        (proptest::collection::vec(any::<u64>(), 0..8), any::<u32>()).prop_map(
            |(user_ids, lease_ms)| Kind::PresenceSubscribe(pb::PresenceSubscribe {
                user_ids,
                lease_ms
            })
        ),
        (0i32..1000, text()).prop_map(|(code, reason)| Kind::Kick(pb::Kick { code, reason })),
        (0i32..1000, text(), any::<u32>()).prop_map(|(code, message, retry_after_ms)| {
            Kind::Error(pb::Error {
                code,
                message,
                retry_after_ms,
            })
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), kind()).prop_map(|(request_id, kind)| Frame::new(request_id, kind))
}

proptest! {
    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let wire = encode_frame(&frame);
        let mut buf = BytesMut::from(&wire[..]);
        let payload = FrameCodec::default().decode(&mut buf).unwrap().expect("one whole frame");
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode_frame(payload).unwrap(), frame);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_frames(
        frames in proptest::collection::vec(frame(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            wire.extend_from_slice(&encode_frame(f));
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in points {
            buf.extend_from_slice(&wire[start..end]);
            start = end;
            while let Some(payload) = codec.decode(&mut buf).unwrap() {
                decoded.push(decode_frame(payload).unwrap());
            }
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::new(256);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(payload)) = codec.decode(&mut buf) {
            let _ = decode_frame(payload);
        }
        prop_assert!(buf.capacity() <= 4096);
    }
}

/// The fast `Send` reader and the `Deliver` writer in `wire` against prost.
mod wire {
    use super::*;
    use courier_protocol::wire::{
        decode_inbound, deliver_frame, plain_text, DeliverHead, Inbound, SendView,
    };
    use courier_protocol::ConversationId;
    use prost::Message as _;

    fn payload(frame: &Frame) -> Bytes {
        encode_frame(frame).slice(courier_protocol::LENGTH_PREFIX_BYTES..)
    }

    fn same_send(view: &SendView, send: &pb::Send) -> bool {
        view.client_msg_id() == send.client_msg_id
            && view.conversation() == send.conversation
            && view.reply_to_seq == send.reply_to_seq
            && view.body().map(|b| pb::MessageBody::decode(b).unwrap()) == send.body
    }

    proptest! {
        #[test]
        fn inbound_frames_mean_what_prost_reads(frame in frame()) {
            match (decode_inbound(payload(&frame)).unwrap(), frame.kind.clone()) {
                (Inbound::Send(id, view), Some(Kind::Send(send))) => {
                    prop_assert_eq!(id, frame.request_id);
                    prop_assert!(same_send(&view, &send), "{:?} vs {:?}", view, send);
                }
                (Inbound::Other(other), _) => prop_assert_eq!(*other, frame),
                (got, _) => prop_assert!(false, "{:?} for {:?}", got, frame),
            }
        }

        #[test]
        fn arbitrary_payloads_are_refused_or_read_as_prost_reads_them(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            as_send in any::<bool>(),
        ) {
            // Wrapped as a Send's bytes half of the time, so the fast path is hit.
            let bytes = if as_send {
                let mut wrapped = vec![0x72, bytes.len() as u8];
                wrapped.truncate(if bytes.len() < 128 { 2 } else { 0 });
                wrapped.extend_from_slice(&bytes);
                wrapped
            } else {
                bytes
            };
            let by_prost = decode_frame(Bytes::from(bytes.clone()));
            match (decode_inbound(Bytes::from(bytes)), by_prost) {
                (Ok(Inbound::Send(id, view)), Ok(frame)) => {
                    prop_assert_eq!(id, frame.request_id);
                    let Some(Kind::Send(send)) = frame.kind else {
                        return Err(TestCaseError::fail("prost read another kind"));
                    };
                    prop_assert!(same_send(&view, &send));
                }
                (Ok(Inbound::Other(a)), Ok(b)) => prop_assert_eq!(*a, b),
                (Err(_), Err(_)) => {}
                // Only the body is left to the caller to validate.
                (Ok(Inbound::Send(_, view)), Err(_)) => {
                    let body = view.body_bytes().expect("a body that prost refused");
                    prop_assert!(pb::MessageBody::decode(body).is_err());
                }
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }

        #[test]
        fn plain_text_bodies_read_as_prost_reads_them(
            body in body(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
            use_noise in any::<bool>(),
        ) {
            let bytes = if use_noise { noise } else { body.encode_to_vec() };
            if let Some((text, mentions)) = plain_text(&bytes) {
                let decoded = pb::MessageBody::decode(&bytes[..]).expect("prost reads it too");
                prop_assert_eq!(decoded.as_text(), Some(text));
                let mentioned = match decoded.content {
                    Some(pb::message_body::Content::Text(t)) => !t.mentions.is_empty(),
                    _ => false,
                };
                prop_assert_eq!(mentions, mentioned);
            } else if !use_noise {
                // `@all` needs the sender's role checked: always the slow path.
                let is_plain = matches!(
                    &body.content,
                    Some(pb::message_body::Content::Text(t)) if !t.mention_all
                );
                prop_assert!(!is_plain, "a plain text body took the slow path");
            }
        }

        #[test]
        fn deliver_is_what_prost_writes(m in message()) {
            let body = m.body.as_ref().map(|b| b.encode_to_vec()).unwrap_or_default();
            // A live delivery is of a message just stored: never edited yet.
            let m = pb::Message {
                body: (!body.is_empty()).then(|| m.body.clone().unwrap()),
                edited: None,
                reactions: Vec::new(),
                ..m
            };
            let conversation: ConversationId = m.conversation.parse().unwrap();
            let head = DeliverHead {
                conversation,
                seq: m.seq,
                sender: m.sender,
                sender_device: &m.sender_device,
                client_msg_id: &m.client_msg_id,
                server_time_ms: m.server_time_ms,
                reply_to_seq: m.reply_to_seq,
                recalled: m.recalled.map(|r| (r.by_user, r.at_ms)),
            };
            let expected = encode_frame(&Frame::new(
                0,
                Kind::Deliver(pb::Deliver { message: Some(m.clone()) }),
            ));
            prop_assert_eq!(deliver_frame(&head, &body), expected);
        }
    }
}
