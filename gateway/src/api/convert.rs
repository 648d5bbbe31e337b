//! Conversions between stored messages, protobuf messages and JSON.

use bytes::Bytes;
use courier_protocol::pb::{self, message_body::Content};
use courier_storage::StoredMessage;
use prost::Message as _;
use serde_json::{json, Value};

/// The protobuf form of a stored message. A body that fails to decode (it was
/// validated on the way in, so only disk corruption does this) is left empty.
pub fn to_pb(m: &StoredMessage) -> pb::Message {
    pb::Message {
        conversation: m.conversation.to_string(),
        seq: m.seq,
        sender: m.sender,
        sender_device: m.sender_device.clone(),
        client_msg_id: m.client_msg_id.clone(),
        server_time_ms: m.server_time_ms,
        body: decode_body(&m.body),
        reply_to_seq: m.reply_to_seq,
        recalled: m.recalled.map(|r| pb::Recalled {
            by_user: r.by_user,
            at_ms: r.at_ms,
        }),
    }
}

fn decode_body(bytes: &Bytes) -> Option<pb::MessageBody> {
    if bytes.is_empty() {
        return None;
    }
    pb::MessageBody::decode(bytes.clone()).ok()
}

/// The JSON form of a stored message, as the HTTP API returns it.
pub fn to_json(m: &StoredMessage) -> Value {
    let body = decode_body(&m.body);
    let mut out = json!({
        "conversation": m.conversation.to_string(),
        "seq": m.seq,
        "from": m.sender,
        "from_device": m.sender_device,
        "client_msg_id": m.client_msg_id,
        "server_time_ms": m.server_time_ms,
        "body": body.as_ref().map_or(Value::Null, body_json),
    });
    if let Some(text) = body.as_ref().and_then(|b| b.as_text()) {
        out["text"] = Value::String(text.to_owned());
    }
    if m.reply_to_seq != 0 {
        out["reply_to_seq"] = json!(m.reply_to_seq);
    }
    if let Some(r) = m.recalled {
        out["recalled"] = json!({"by_user": r.by_user, "at_ms": r.at_ms});
    }
    out
}

/// The JSON form of a message body: `{"type": "text" | "media" | "custom" | "system", ...}`.
pub fn body_json(body: &pb::MessageBody) -> Value {
    match &body.content {
        None => json!({"type": "empty"}),
        Some(Content::Text(t)) => json!({"type": "text", "text": t.text, "mentions": t.mentions}),
        Some(Content::Media(m)) => json!({
            "type": "media",
            "kind": pb::MediaKind::try_from(m.kind).map_or("unspecified".to_owned(), |k| {
                k.as_str_name().trim_start_matches("MEDIA_KIND_").to_ascii_lowercase()
            }),
            "url": m.url,
            "mime": m.mime,
            "size": m.size,
            "sha256": m.sha256,
            "width": m.width,
            "height": m.height,
            "duration_ms": m.duration_ms,
            "name": m.name,
            "caption": m.caption,
            "thumbnail": m.thumbnail.as_ref().map(|t| json!({
                "url": t.url, "mime": t.mime, "size": t.size, "width": t.width, "height": t.height,
            })),
        }),
        Some(Content::Custom(c)) => json!({
            "type": "custom",
            "custom_type": c.r#type,
            "data_hex": hex::encode(&c.data),
        }),
        Some(Content::System(s)) => json!({"type": "system", "event": format!("{:?}", s.event)}),
    }
}
