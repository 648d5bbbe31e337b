//! The hot path of the wire format, without per-message copies.
//!
//! Nearly every frame a server reads is a `Send`, and nearly every frame it writes is
//! a `Deliver` of what a `Send` carried. [`decode_inbound`] reads a `Send` as views
//! into the frame's buffer: the strings are checked for UTF-8 but not copied, and the
//! body stays as the client encoded it. [`encode_deliver`] writes a `Deliver` around
//! such a stored body, spliced in unchanged, instead of decoding it and encoding it
//! again.
//!
//! The fast reader takes only the plain shape (each field at most once, no unknown
//! fields); anything else is parsed by prost, so both paths mean the same by a
//! frame. One difference is deliberate: the body is not parsed here, so a `Send`
//! whose body is not a valid `MessageBody` is returned rather than refused. The
//! caller decodes the body to validate it before it stores anything.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::encoding::{
    decode_key, decode_varint, encode_varint, encoded_len_varint, key_len, WireType,
};
use prost::Message as _;

use crate::pb::{self, frame::Kind, Frame};
use crate::{decode_frame, CodecError, ConversationId, LENGTH_PREFIX_BYTES};

/// A `Send` frame's fields, read in place: the frame's buffer and where each field
/// lies in it. Nothing is copied and no reference count is touched per field.
#[derive(Clone)]
pub struct SendView {
    buffer: Bytes,
    client_msg_id: Span,
    conversation: Span,
    body: Option<Span>,
    /// `Send.reply_to_seq`.
    pub reply_to_seq: u64,
}

/// Where a field lies in a [`SendView`]'s buffer.
#[derive(Clone, Copy, Default)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn of<'b>(&self, buffer: &'b [u8]) -> &'b [u8] {
        &buffer[self.start..self.start + self.len]
    }
}

impl SendView {
    /// `Send.client_msg_id`.
    pub fn client_msg_id(&self) -> &str {
        self.text(self.client_msg_id)
    }

    /// `Send.conversation`, unparsed.
    pub fn conversation(&self) -> &str {
        self.text(self.conversation)
    }

    /// `Send.body` as the client encoded it (a `MessageBody`), if present. Not
    /// validated: decode it before trusting it.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.map(|span| span.of(&self.buffer))
    }

    /// [`SendView::body`] as `Bytes` sharing the frame's buffer, to store.
    pub fn body_bytes(&self) -> Option<Bytes> {
        self.body
            .map(|span| self.buffer.slice(span.start..span.start + span.len))
    }

    fn text(&self, span: Span) -> &str {
        // Checked for UTF-8 when the view was made, so the fallback is never taken.
        simdutf8::basic::from_utf8(span.of(&self.buffer)).unwrap_or_default()
    }
}

impl From<pb::Send> for SendView {
    fn from(send: pb::Send) -> Self {
        let has_body = send.body.is_some();
        let body = send.body.map(|b| b.encode_to_vec()).unwrap_or_default();
        let mut buffer = BytesMut::with_capacity(
            send.client_msg_id.len() + send.conversation.len() + body.len(),
        );
        let mut put = |bytes: &[u8]| {
            let span = Span {
                start: buffer.len(),
                len: bytes.len(),
            };
            buffer.put_slice(bytes);
            span
        };
        let client_msg_id = put(send.client_msg_id.as_bytes());
        let conversation = put(send.conversation.as_bytes());
        let body = put(&body);
        Self {
            buffer: buffer.freeze(),
            client_msg_id,
            conversation,
            body: has_body.then_some(body),
            reply_to_seq: send.reply_to_seq,
        }
    }
}

impl PartialEq for SendView {
    fn eq(&self, other: &Self) -> bool {
        self.client_msg_id() == other.client_msg_id()
            && self.conversation() == other.conversation()
            && self.body() == other.body()
            && self.reply_to_seq == other.reply_to_seq
    }
}

impl std::fmt::Debug for SendView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendView")
            .field("client_msg_id", &self.client_msg_id())
            .field("conversation", &self.conversation())
            .field("body", &self.body())
            .field("reply_to_seq", &self.reply_to_seq)
            .finish()
    }
}

/// A frame from a client: a `Send` (request id and view), or any other frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A `Send` with its request id.
    Send(u64, SendView),
    /// Any other frame, parsed by prost (boxed: a `Frame` is several times the
    /// size of a `SendView`).
    Other(Box<Frame>),
}

/// `Frame.request_id`, `Frame.send`, and `Send`'s fields.
const FRAME_REQUEST_ID: u32 = 1;
const FRAME_SEND: u32 = 14;
const FRAME_DELIVER: u32 = 16;
const SEND_CLIENT_MSG_ID: u32 = 1;
const SEND_CONVERSATION: u32 = 2;
const SEND_BODY: u32 = 3;
const SEND_REPLY_TO_SEQ: u32 = 4;

/// Parses one frame payload (as [`crate::FrameCodec`] yields it). A `Send` comes
/// back as a [`SendView`] sharing `payload`; other frames as prost values.
pub fn decode_inbound(payload: Bytes) -> Result<Inbound, CodecError> {
    let payload = match plain_send(payload) {
        Ok((request_id, send)) => return Ok(Inbound::Send(request_id, send)),
        Err(payload) => payload,
    };
    let frame = decode_frame(payload)?;
    Ok(match frame.kind {
        Some(Kind::Send(send)) => Inbound::Send(frame.request_id, send.into()),
        _ => Inbound::Other(Box::new(frame)),
    })
}

/// Reads `payload` as `Frame { request_id, send }` in the plain shape; gives the
/// payload back for anything else (another kind, a repeated or unknown field, a
/// malformed field).
fn plain_send(payload: Bytes) -> Result<(u64, SendView), Bytes> {
    let Some((request_id, view)) = plain_send_spans(&payload) else {
        return Err(payload);
    };
    Ok((
        request_id,
        SendView {
            buffer: payload,
            ..view
        },
    ))
}

fn plain_send_spans(payload: &[u8]) -> Option<(u64, SendView)> {
    let mut buf = payload;
    let (mut request_id, mut send) = (None, None);
    while !buf.is_empty() {
        match decode_key(&mut buf).ok()? {
            (FRAME_REQUEST_ID, WireType::Varint) if request_id.is_none() => {
                request_id = Some(decode_varint(&mut buf).ok()?);
            }
            (FRAME_SEND, WireType::LengthDelimited) if send.is_none() => {
                send = Some(delimited(payload, &mut buf)?);
            }
            _ => return None,
        }
    }
    Some((request_id.unwrap_or(0), plain_send_fields(payload, send?)?))
}

/// `Send`'s fields in the plain shape, as spans of `payload`.
fn plain_send_fields(payload: &[u8], send: Span) -> Option<SendView> {
    let mut buf = send.of(payload);
    let mut seen = [false; 5];
    let mut view = SendView {
        buffer: Bytes::new(),
        client_msg_id: Span::default(),
        conversation: Span::default(),
        body: None,
        reply_to_seq: 0,
    };
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        if !(SEND_CLIENT_MSG_ID..=SEND_REPLY_TO_SEQ).contains(&tag) || seen[tag as usize] {
            return None;
        }
        seen[tag as usize] = true;
        match (tag, wire_type) {
            (SEND_CLIENT_MSG_ID, WireType::LengthDelimited) => {
                view.client_msg_id = utf8(payload, delimited(payload, &mut buf)?)?;
            }
            (SEND_CONVERSATION, WireType::LengthDelimited) => {
                view.conversation = utf8(payload, delimited(payload, &mut buf)?)?;
            }
            (SEND_BODY, WireType::LengthDelimited) => {
                view.body = Some(delimited(payload, &mut buf)?);
            }
            (SEND_REPLY_TO_SEQ, WireType::Varint) => {
                view.reply_to_seq = decode_varint(&mut buf).ok()?;
            }
            _ => return None,
        }
    }
    Some(view)
}

fn utf8(payload: &[u8], span: Span) -> Option<Span> {
    simdutf8::basic::from_utf8(span.of(payload))
        .ok()
        .map(|_| span)
}

/// Reads a length-delimited field's length from `buf` and returns where its bytes
/// lie in `whole` (which `buf` is a suffix of), advancing `buf` past them.
fn delimited(whole: &[u8], buf: &mut &[u8]) -> Option<Span> {
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    if len > buf.len() {
        return None;
    }
    let start = whole.len() - buf.len();
    buf.advance(len);
    Some(Span { start, len })
}

/// What a `Deliver` says about a stored message besides its body.
#[derive(Debug, Clone, Copy)]
pub struct DeliverHead<'a> {
    /// `Message.conversation`.
    pub conversation: ConversationId,
    /// `Message.seq`.
    pub seq: u64,
    /// `Message.sender`.
    pub sender: u64,
    /// `Message.sender_device`.
    pub sender_device: &'a str,
    /// `Message.client_msg_id`.
    pub client_msg_id: &'a str,
    /// `Message.server_time_ms`.
    pub server_time_ms: u64,
    /// `Message.reply_to_seq`.
    pub reply_to_seq: u64,
    /// `Message.recalled`: by whom and when.
    pub recalled: Option<(u64, u64)>,
}

/// `Message`'s fields.
const MESSAGE_CONVERSATION: u32 = 1;
const MESSAGE_SEQ: u32 = 2;
const MESSAGE_SENDER: u32 = 3;
const MESSAGE_SENDER_DEVICE: u32 = 4;
const MESSAGE_CLIENT_MSG_ID: u32 = 5;
const MESSAGE_SERVER_TIME_MS: u32 = 6;
const MESSAGE_BODY: u32 = 7;
const MESSAGE_REPLY_TO_SEQ: u32 = 8;
const MESSAGE_RECALLED: u32 = 9;
const DELIVER_MESSAGE: u32 = 1;

/// Longest conversation id text: "d:" + two 20-digit ids and a colon.
const MAX_CONVERSATION_TEXT: usize = 2 + 20 + 1 + 20;

/// Appends a length-prefixed `Frame { Deliver { Message } }` (request id 0) for a
/// stored message to `dst`: `head`'s fields, then `body` (an encoded
/// `MessageBody`, empty for none) spliced in as it is. Byte for byte what prost
/// writes for the same values.
pub fn encode_deliver(head: &DeliverHead<'_>, body: &[u8], dst: &mut BytesMut) {
    let mut text = [0u8; MAX_CONVERSATION_TEXT];
    let conversation = conversation_text(&head.conversation, &mut text);
    let recalled_len = head
        .recalled
        .map(|(by, at)| uint64_len(1, by) + uint64_len(2, at));
    let message_len = string_len(MESSAGE_CONVERSATION, conversation.len())
        + uint64_len(MESSAGE_SEQ, head.seq)
        + uint64_len(MESSAGE_SENDER, head.sender)
        + string_len(MESSAGE_SENDER_DEVICE, head.sender_device.len())
        + string_len(MESSAGE_CLIENT_MSG_ID, head.client_msg_id.len())
        + uint64_len(MESSAGE_SERVER_TIME_MS, head.server_time_ms)
        + string_len(MESSAGE_BODY, body.len())
        + uint64_len(MESSAGE_REPLY_TO_SEQ, head.reply_to_seq)
        + recalled_len.map_or(0, |len| nested_len(MESSAGE_RECALLED, len));
    let deliver_len = nested_len(DELIVER_MESSAGE, message_len);
    let frame_len = nested_len(FRAME_DELIVER, deliver_len);

    dst.reserve(LENGTH_PREFIX_BYTES + frame_len);
    dst.put_u32(frame_len as u32);
    put_len_key(FRAME_DELIVER, deliver_len, dst);
    put_len_key(DELIVER_MESSAGE, message_len, dst);
    put_bytes(MESSAGE_CONVERSATION, conversation, dst);
    put_uint64(MESSAGE_SEQ, head.seq, dst);
    put_uint64(MESSAGE_SENDER, head.sender, dst);
    put_bytes(MESSAGE_SENDER_DEVICE, head.sender_device.as_bytes(), dst);
    put_bytes(MESSAGE_CLIENT_MSG_ID, head.client_msg_id.as_bytes(), dst);
    put_uint64(MESSAGE_SERVER_TIME_MS, head.server_time_ms, dst);
    put_bytes(MESSAGE_BODY, body, dst);
    put_uint64(MESSAGE_REPLY_TO_SEQ, head.reply_to_seq, dst);
    if let (Some((by, at)), Some(len)) = (head.recalled, recalled_len) {
        put_len_key(MESSAGE_RECALLED, len, dst);
        put_uint64(1, by, dst);
        put_uint64(2, at, dst);
    }
}

/// The fields of a `Deliver` a receiver looks at first, read in place: the body
/// stays an encoded `MessageBody` (decode it when it is needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverView<'a> {
    /// `Message.conversation`, as text.
    pub conversation: &'a str,
    /// `Message.seq`.
    pub seq: u64,
    /// `Message.sender`.
    pub sender: u64,
    /// `Message.body`, encoded (empty for none).
    pub body: &'a [u8],
}

/// Reads a frame payload (as [`crate::FrameCodec`] yields it) as a `Deliver`
/// without decoding the body or copying anything: the cheap path for a client that
/// receives many messages. `None` for any other frame, or a `Deliver` in a shape
/// this reader does not take (repeated fields, unknown wire types): parse those with
/// prost.
pub fn peek_deliver(payload: &[u8]) -> Option<DeliverView<'_>> {
    let mut buf = payload;
    let mut deliver = None;
    while !buf.is_empty() {
        match decode_key(&mut buf).ok()? {
            (FRAME_REQUEST_ID, WireType::Varint) => {
                decode_varint(&mut buf).ok()?;
            }
            (FRAME_DELIVER, WireType::LengthDelimited) if deliver.is_none() => {
                deliver = Some(delimited(payload, &mut buf)?);
            }
            _ => return None,
        }
    }
    let mut buf = deliver?.of(payload);
    let whole = buf;
    let mut message = None;
    while !buf.is_empty() {
        match decode_key(&mut buf).ok()? {
            (DELIVER_MESSAGE, WireType::LengthDelimited) if message.is_none() => {
                message = Some(delimited(whole, &mut buf)?);
            }
            _ => return None,
        }
    }
    let whole = message?.of(whole);
    let mut buf = whole;
    let mut view = DeliverView {
        conversation: "",
        seq: 0,
        sender: 0,
        body: &[],
    };
    while !buf.is_empty() {
        match decode_key(&mut buf).ok()? {
            (MESSAGE_CONVERSATION, WireType::LengthDelimited) => {
                let span = delimited(whole, &mut buf)?;
                view.conversation = std::str::from_utf8(span.of(whole)).ok()?;
            }
            (MESSAGE_SEQ, WireType::Varint) => view.seq = decode_varint(&mut buf).ok()?,
            (MESSAGE_SENDER, WireType::Varint) => view.sender = decode_varint(&mut buf).ok()?,
            (MESSAGE_BODY, WireType::LengthDelimited) => {
                view.body = delimited(whole, &mut buf)?.of(whole);
            }
            (_, WireType::Varint) => {
                decode_varint(&mut buf).ok()?;
            }
            (_, WireType::LengthDelimited) => {
                delimited(whole, &mut buf)?;
            }
            _ => return None,
        }
    }
    Some(view)
}

/// [`encode_deliver`] into a new buffer, ready to share among recipients.
pub fn deliver_frame(head: &DeliverHead<'_>, body: &[u8]) -> Bytes {
    let mut dst = BytesMut::new();
    encode_deliver(head, body, &mut dst);
    dst.freeze()
}

/// Writes `c`'s canonical text into `buf`; the written part.
fn conversation_text<'b>(c: &ConversationId, buf: &'b mut [u8; MAX_CONVERSATION_TEXT]) -> &'b [u8] {
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    let mut digits = [0u8; 20];
    match *c {
        ConversationId::Direct { low, high } => {
            put(b"d:");
            put(decimal(low, &mut digits));
            put(b":");
            put(decimal(high, &mut digits));
        }
        ConversationId::Group(g) => {
            put(b"g:");
            put(decimal(g, &mut digits));
        }
    }
    &buf[..len]
}

/// `n` in decimal, written at the end of `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// `MessageBody.text` and `Text`'s fields.
const BODY_TEXT: u32 = 10;
const TEXT_TEXT: u32 = 1;
const TEXT_MENTIONS: u32 = 2;

/// The text of an encoded `MessageBody` that holds a `Text` in the plain shape
/// (the text at most once, mentions packed or not, nothing else), checked for
/// UTF-8 without copying it. `None` for any other body: decode those with prost.
pub fn plain_text_body(body: &[u8]) -> Option<&str> {
    plain_text(body).map(|(text, _)| text)
}

/// Like [`plain_text_body`], and whether the body mentions anyone.
pub fn plain_text(body: &[u8]) -> Option<(&str, bool)> {
    let mut mentions = false;
    let mut buf = body;
    let text = match decode_key(&mut buf).ok()? {
        (BODY_TEXT, WireType::LengthDelimited) => delimited(body, &mut buf)?,
        _ => return None,
    };
    if !buf.is_empty() {
        return None;
    }
    let mut buf = text.of(body);
    let mut found: Option<&str> = None;
    while !buf.is_empty() {
        match decode_key(&mut buf).ok()? {
            (TEXT_TEXT, WireType::LengthDelimited) if found.is_none() => {
                let span = delimited(text.of(body), &mut buf)?;
                found = Some(simdutf8::basic::from_utf8(span.of(text.of(body))).ok()?);
            }
            (TEXT_MENTIONS, WireType::Varint) => {
                decode_varint(&mut buf).ok()?;
                mentions = true;
            }
            (TEXT_MENTIONS, WireType::LengthDelimited) => {
                let mut packed = delimited(text.of(body), &mut buf)?.of(text.of(body));
                while !packed.is_empty() {
                    decode_varint(&mut packed).ok()?;
                    mentions = true;
                }
            }
            _ => return None,
        }
    }
    Some((found.unwrap_or_default(), mentions))
}

/// Proto3 omits zero scalars and empty strings.
fn uint64_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn string_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        nested_len(tag, len)
    }
}

/// A present sub-message is written even when empty.
fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_uint64(tag: u32, value: u64, dst: &mut BytesMut) {
    if value != 0 {
        put_key(tag, WireType::Varint, dst);
        encode_varint(value, dst);
    }
}

fn put_bytes(tag: u32, bytes: &[u8], dst: &mut BytesMut) {
    if !bytes.is_empty() {
        put_len_key(tag, bytes.len(), dst);
        dst.put_slice(bytes);
    }
}

fn put_len_key(tag: u32, len: usize, dst: &mut BytesMut) {
    put_key(tag, WireType::LengthDelimited, dst);
    encode_varint(len as u64, dst);
}

fn put_key(tag: u32, wire_type: WireType, dst: &mut BytesMut) {
    encode_varint(u64::from((tag << 3) | wire_type as u32), dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_frame;

    fn text_body(text: &str) -> pb::MessageBody {
        pb::MessageBody::text(text)
    }

    #[test]
    fn a_plain_send_is_read_as_views() {
        let frame = Frame::new(
            9,
            Kind::Send(pb::Send {
                client_msg_id: "m-1".into(),
                conversation: "d:1:2".into(),
                body: Some(text_body("héllo")),
                reply_to_seq: 4,
            }),
        );
        let wire = encode_frame(&frame).slice(LENGTH_PREFIX_BYTES..);
        assert!(plain_send(wire.clone()).is_ok(), "takes the fast path");
        let Inbound::Send(id, view) = decode_inbound(wire).unwrap() else {
            panic!("a send")
        };
        assert_eq!(id, 9);
        assert_eq!(view.client_msg_id(), "m-1");
        assert_eq!(view.conversation(), "d:1:2");
        assert_eq!(view.reply_to_seq, 4);
        let body = pb::MessageBody::decode(view.body_bytes().unwrap()).unwrap();
        assert_eq!(body, text_body("héllo"));
    }

    #[test]
    fn odd_shapes_take_the_prost_path_and_mean_the_same() {
        // The same field twice: protobuf keeps the last string, merges sub-messages.
        let mut wire = BytesMut::new();
        put_uint64(FRAME_REQUEST_ID, 3, &mut wire);
        let mut send = BytesMut::new();
        put_bytes(SEND_CLIENT_MSG_ID, b"first", &mut send);
        put_bytes(SEND_CLIENT_MSG_ID, b"second", &mut send);
        put_bytes(SEND_CONVERSATION, b"g:7", &mut send);
        put_bytes(FRAME_SEND, &send, &mut wire);
        let wire = wire.freeze();
        assert!(plain_send(wire.clone()).is_err());
        let Inbound::Send(3, view) = decode_inbound(wire).unwrap() else {
            panic!("a send")
        };
        assert_eq!(view.client_msg_id(), "second");
        assert_eq!(view.body(), None);
    }

    #[test]
    fn invalid_utf8_is_refused_on_both_paths() {
        let mut send = BytesMut::new();
        put_bytes(SEND_CONVERSATION, &[0xff, 0xfe], &mut send);
        let mut wire = BytesMut::new();
        put_bytes(FRAME_SEND, &send, &mut wire);
        assert!(decode_inbound(wire.freeze()).is_err());
    }

    #[test]
    fn other_frames_come_back_as_prost_values() {
        let frame = Frame::new(2, Kind::Heartbeat(pb::Heartbeat { client_time_ms: 5 }));
        let wire = encode_frame(&frame).slice(LENGTH_PREFIX_BYTES..);
        assert_eq!(
            decode_inbound(wire).unwrap(),
            Inbound::Other(Box::new(frame))
        );
    }

    #[test]
    fn plain_text_bodies_are_read_in_place() {
        let body = pb::MessageBody {
            content: Some(pb::message_body::Content::Text(pb::Text {
                text: "hi @bob".into(),
                mentions: vec![7, 1 << 40],
                mention_all: false,
            })),
        };
        assert_eq!(plain_text_body(&body.encode_to_vec()), Some("hi @bob"));
        assert_eq!(plain_text(&body.encode_to_vec()), Some(("hi @bob", true)));
        assert_eq!(plain_text_body(&text_body("").encode_to_vec()), Some(""));
        assert_eq!(
            plain_text(&text_body("x").encode_to_vec()),
            Some(("x", false))
        );
        // Not text, or not the plain shape: left to prost.
        let custom = pb::MessageBody {
            content: Some(pb::message_body::Content::Custom(pb::Custom::default())),
        };
        assert_eq!(plain_text_body(&custom.encode_to_vec()), None);
        let twice = [
            text_body("a").encode_to_vec(),
            text_body("b").encode_to_vec(),
        ]
        .concat();
        assert_eq!(plain_text_body(&twice), None);
        assert_eq!(
            plain_text_body(&[0x52, 0x03, 0x0a, 0x01, 0xff]),
            None,
            "bad UTF-8"
        );
    }

    #[test]
    fn conversation_ids_are_written_canonically() {
        let mut buf = [0u8; MAX_CONVERSATION_TEXT];
        for c in [
            ConversationId::direct(1, u64::MAX).unwrap(),
            ConversationId::direct(9, 10).unwrap(),
            ConversationId::Group(0),
            ConversationId::Group(1_234_567_890),
        ] {
            assert_eq!(conversation_text(&c, &mut buf), c.to_string().as_bytes());
        }
    }

    #[test]
    fn deliver_matches_prost_byte_for_byte() {
        let body = text_body("hello there");
        let head = DeliverHead {
            conversation: ConversationId::direct(3, u64::MAX).unwrap(),
            seq: 1 << 40,
            sender: 3,
            sender_device: "phone",
            client_msg_id: "c-1",
            server_time_ms: 1_700_000_000_000,
            reply_to_seq: 0,
            recalled: Some((0, 12)),
        };
        let expected = encode_frame(&Frame::new(
            0,
            Kind::Deliver(pb::Deliver {
                message: Some(pb::Message {
                    conversation: head.conversation.to_string(),
                    seq: head.seq,
                    sender: head.sender,
                    sender_device: head.sender_device.into(),
                    client_msg_id: head.client_msg_id.into(),
                    server_time_ms: head.server_time_ms,
                    body: Some(body.clone()),
                    reply_to_seq: 0,
                    recalled: Some(pb::Recalled {
                        by_user: 0,
                        at_ms: 12,
                    }),
                    edited: None,
                    reactions: Vec::new(),
                }),
            }),
        ));
        assert_eq!(deliver_frame(&head, &body.encode_to_vec()), expected);
    }

    proptest::proptest! {
        /// What `peek_deliver` reads is what was written, for any message.
        #[test]
        fn peek_deliver_reads_what_encode_deliver_wrote(
            low in proptest::prelude::any::<u64>(), seq in proptest::prelude::any::<u64>(),
            sender in proptest::prelude::any::<u64>(), device in ".{0,20}", cmid in ".{0,40}",
            time in proptest::prelude::any::<u64>(), reply in proptest::prelude::any::<u64>(),
            recalled in proptest::option::of(proptest::prelude::any::<(u64, u64)>()),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let head = DeliverHead {
                conversation: ConversationId::Group(low),
                seq, sender, sender_device: &device, client_msg_id: &cmid,
                server_time_ms: time, reply_to_seq: reply, recalled,
            };
            let wire = deliver_frame(&head, &body);
            let view = peek_deliver(&wire[LENGTH_PREFIX_BYTES..]).unwrap();
            let text = head.conversation.to_string();
            proptest::prop_assert_eq!(view.conversation, text.as_str());
            proptest::prop_assert_eq!((view.seq, view.sender), (seq, sender));
            proptest::prop_assert_eq!(view.body, &body[..]);
        }

        #[test]
        fn peek_deliver_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = peek_deliver(&bytes);
        }
    }

    #[test]
    fn peek_deliver_passes_on_other_frames() {
        let frame = Frame::new(3, Kind::Heartbeat(pb::Heartbeat { client_time_ms: 5 }));
        let wire = encode_frame(&frame);
        assert_eq!(peek_deliver(&wire[LENGTH_PREFIX_BYTES..]), None);
    }
}
