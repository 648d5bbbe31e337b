//! Fixtures shared by Courier's criterion suites: typical chat frames of a given size.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use courier_protocol::pb::{self, frame::Kind, Frame};

/// A text of `len` bytes.
pub fn text(len: usize) -> String {
    "lorem ipsum dolor sit amet, "
        .chars()
        .cycle()
        .take(len)
        .collect()
}

/// A `Deliver` frame as the server fans it out: one text message of `text_len` bytes.
pub fn deliver_frame(text_len: usize) -> Frame {
    Frame::new(
        0,
        Kind::Deliver(pb::Deliver {
            message: Some(pb::Message {
                conversation: "d:1048576:2097152".into(),
                seq: 123_456,
                sender: 1_048_576,
                sender_device: "dev-5f2c9a".into(),
                client_msg_id: "m-8c5e1f0a9b7d4c3e2f1a0b9c8d7e6f5a".into(),
                server_time_ms: 1_795_000_000_000,
                body: Some(pb::MessageBody::text(text(text_len))),
                reply_to_seq: 0,
                recalled: None,
                edited: None,
                reactions: Vec::new(),
            }),
        }),
    )
}

/// A `Send` frame as a client sends it.
pub fn send_frame(text_len: usize) -> Frame {
    Frame::new(
        42,
        Kind::Send(pb::Send {
            client_msg_id: "m-8c5e1f0a9b7d4c3e2f1a0b9c8d7e6f5a".into(),
            conversation: "d:1048576:2097152".into(),
            body: Some(pb::MessageBody::text(text(text_len))),
            reply_to_seq: 0,
        }),
    )
}
