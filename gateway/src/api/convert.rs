//! Conversions between stored messages, protobuf messages and JSON.

use bytes::Bytes;
use courier_protocol::pb::{self, message_body::Content};
use courier_storage::StoredMessage;
use prost::Message as _;
use serde_json::{json, Value};

use crate::api::dto::{EditedView, MessageView, ReactionView, RecalledView};

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
        body: shown_body(m),
        reply_to_seq: m.reply_to_seq,
        recalled: m.recalled.map(|r| pb::Recalled {
            by_user: r.by_user,
            at_ms: r.at_ms,
        }),
        edited: m.edited.as_ref().map(|e| pb::Edited {
            by_user: e.by_user,
            at_ms: e.at_ms,
            count: e.count,
            event_seq: e.event_seq,
        }),
        reactions: Vec::new(),
    }
}

/// `counts` (one message's reactions) as the protocol shows them.
pub fn reactions_pb(counts: &[courier_storage::ReactionCount]) -> Vec<pb::ReactionCount> {
    counts
        .iter()
        .map(|r| pb::ReactionCount {
            emoji: r.emoji.clone(),
            count: r.count,
            mine: r.mine,
        })
        .collect()
}

/// `counts` (one message's reactions) as the HTTP API shows them.
pub fn reactions_view(counts: &[courier_storage::ReactionCount]) -> Vec<ReactionView> {
    counts
        .iter()
        .map(|r| ReactionView {
            emoji: r.emoji.clone(),
            count: r.count,
            mine: r.mine,
        })
        .collect()
}

/// The body a message shows: its latest edit's when it was edited, else its own.
pub fn shown_body(m: &StoredMessage) -> Option<pb::MessageBody> {
    match &m.edited {
        Some(e) => edited_body(&e.event_body),
        None => decode_body(&m.body),
    }
}

/// The new body an edit event (a `MessageEdited` system event) carries.
pub fn edited_body(event_body: &Bytes) -> Option<pb::MessageBody> {
    match decode_body(event_body)?.content? {
        Content::System(pb::SystemEvent {
            event: Some(pb::system_event::Event::MessageEdited(e)),
        }) => e.text.map(|t| pb::MessageBody {
            content: Some(Content::Text(t)),
        }),
        _ => None,
    }
}

fn decode_body(bytes: &Bytes) -> Option<pb::MessageBody> {
    if bytes.is_empty() {
        return None;
    }
    pb::MessageBody::decode(bytes.clone()).ok()
}

/// The HTTP API's view of a stored message.
pub fn to_view(m: &StoredMessage) -> MessageView {
    let body = shown_body(m);
    MessageView {
        conversation: m.conversation.to_string(),
        seq: m.seq,
        from: m.sender,
        from_device: m.sender_device.clone(),
        client_msg_id: m.client_msg_id.clone(),
        server_time_ms: m.server_time_ms,
        text: body.as_ref().and_then(|b| b.as_text()).map(str::to_owned),
        body: body.as_ref().map_or(Value::Null, body_json),
        reply_to_seq: (m.reply_to_seq != 0).then_some(m.reply_to_seq),
        recalled: m.recalled.map(|r| RecalledView {
            by_user: r.by_user,
            at_ms: r.at_ms,
        }),
        edited: m.edited.as_ref().map(|e| EditedView {
            by_user: e.by_user,
            at_ms: e.at_ms,
            count: e.count,
            event_seq: e.event_seq,
        }),
        reactions: Vec::new(),
    }
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
        Some(Content::System(s)) => system_json(s),
    }
}

fn system_json(s: &pb::SystemEvent) -> Value {
    use pb::system_event::Event;
    match &s.event {
        None => json!({"type": "system", "event": "unknown"}),
        Some(Event::GroupProfileChanged(e)) => json!({
            "type": "system", "event": "group_profile_changed", "description": e.description,
            "avatar": e.avatar, "by_user": e.by_user,
        }),
        Some(Event::AnnouncementChanged(e)) => json!({
            "type": "system", "event": "announcement_changed", "text": e.text,
            "version": e.version, "by_user": e.by_user,
        }),
        Some(Event::GroupDismissed(e)) => {
            json!({"type": "system", "event": "group_dismissed", "by_user": e.by_user})
        }
        Some(Event::GroupMuted(e)) => {
            json!({"type": "system", "event": "group_muted", "muted": e.muted, "by_user": e.by_user})
        }
        Some(Event::MemberBanned(e)) => json!({
            "type": "system", "event": "member_banned", "user_id": e.user_id,
            "banned": e.banned, "by_user": e.by_user,
        }),
        Some(Event::MemberMuted(e)) => json!({
            "type": "system", "event": "member_muted", "user_id": e.user_id,
            "until_ms": e.until_ms, "by_user": e.by_user,
        }),
        Some(Event::ReactionsChanged(e)) => json!({
            "type": "system", "event": "reactions_changed",
            "changes": e.changes.iter().map(|c| json!({
                "seq": c.seq, "emoji": c.emoji, "user_id": c.user_id, "added": c.added,
            })).collect::<Vec<_>>(),
            "totals": e.totals.iter().map(|t| json!({
                "seq": t.seq, "emoji": t.emoji, "count": t.count,
            })).collect::<Vec<_>>(),
            "changes_left_out": e.changes_left_out,
        }),
        Some(Event::MessageEdited(e)) => json!({
            "type": "system", "event": "message_edited", "seq": e.seq, "by_user": e.by_user,
            "text": e.text.as_ref().map(|t| &t.text),
            "mentions": e.text.as_ref().map(|t| &t.mentions),
        }),
        Some(Event::MemberJoined(e)) => {
            json!({"type": "system", "event": "member_joined", "user_id": e.user_id, "by_user": e.by_user})
        }
        Some(Event::MemberLeft(e)) => json!({
            "type": "system", "event": "member_left", "user_id": e.user_id, "by_user": e.by_user, "removed": e.removed,
        }),
        Some(Event::MembersAdded(e)) => {
            json!({"type": "system", "event": "members_added", "user_ids": e.user_ids, "by_user": e.by_user})
        }
        Some(Event::MessageRecalled(e)) => {
            json!({"type": "system", "event": "message_recalled", "seq": e.seq, "by_user": e.by_user})
        }
        Some(Event::GroupRenamed(e)) => {
            json!({"type": "system", "event": "group_renamed", "name": e.name, "by_user": e.by_user})
        }
        Some(Event::GroupCreated(e)) => {
            json!({"type": "system", "event": "group_created", "name": e.name, "by_user": e.by_user})
        }
        Some(Event::RoleChanged(e)) => json!({
            "type": "system", "event": "role_changed", "user_id": e.user_id, "role": e.role, "by_user": e.by_user,
        }),
        Some(Event::OwnerChanged(e)) => {
            json!({"type": "system", "event": "owner_changed", "new_owner": e.new_owner, "by_user": e.by_user})
        }
    }
}
