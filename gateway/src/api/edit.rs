//! Edits: the sender of a text message may replace its text within `edit_window_ms`
//! of sending it, at most `edit_max_count` times. Nobody else may, not even a
//! group's owner or admins (they may recall, never put words in a member's mouth).
//!
//! An edit is an event in the conversation's log with its own seq: a
//! `MessageEdited` system event carrying the new text, delivered like any message,
//! so every participant's devices learn of it live or when they sync from their
//! cursor. The store marks the message edited in the commit that stores the event;
//! history then shows the message with its latest text and an `edited` mark. With
//! `edit_keep_versions` off, each edit erases the earlier versions (the original
//! text and the earlier edit events) as a recall would; a recall of an edited
//! message erases every version.
//!
//! The new text passes the same checks as a sent one: its length, its mentions
//! (participants only, never across a block), a block in a 1:1 conversation, the
//! send rate limit and the application's before-send hook.

use courier_protocol::pb::{self, message_body::Content, system_event::Event};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, EditOf, EditRefusal};
use prost::Message as _;

use crate::api::messaging::DELIVER_ENVELOPE_BYTES;
use crate::api::Api;
use crate::error::ApiError;

impl From<EditRefusal> for ApiError {
    fn from(r: EditRefusal) -> Self {
        match r {
            EditRefusal::NoMessage => ApiError::new(ErrorCode::NotFound, "no such message"),
            EditRefusal::Recalled => ApiError::new(ErrorCode::NotFound, "the message was recalled"),
        }
    }
}

impl Api {
    /// Replaces the text of message `seq` of `c`, sent by `user`; returns once the
    /// edit event is durable.
    pub async fn edit(
        &self,
        user: u64,
        device: &str,
        c: &ConversationId,
        seq: u64,
        text: pb::Text,
    ) -> Result<pb::EditAck, ApiError> {
        if self.config.edit_window_ms == 0 {
            return Err(ApiError::new(
                ErrorCode::EditExpired,
                "editing is turned off on this server",
            ));
        }
        self.authorize_send(user, c).await?;
        let message = self.visible_message(user, c, seq).await?;
        if message.recalled.is_some() {
            return Err(EditRefusal::Recalled.into());
        }
        if message.sender != user {
            return Err(ApiError::forbidden("only its sender may edit a message"));
        }
        let is_text = message.edited.is_some()
            || pb::MessageBody::decode(message.body.clone())
                .is_ok_and(|b| matches!(b.content, Some(Content::Text(_))));
        if !is_text {
            return Err(ApiError::invalid("only text messages can be edited"));
        }
        let now = courier_storage::now_ms();
        if now.saturating_sub(message.server_time_ms) > self.config.edit_window_ms {
            return Err(ApiError::new(
                ErrorCode::EditExpired,
                format!(
                    "messages can be edited for {} s",
                    self.config.edit_window_ms / 1000
                ),
            ));
        }
        if message
            .edited
            .as_ref()
            .is_some_and(|e| e.count >= self.config.edit_max_count)
        {
            return Err(ApiError::new(
                ErrorCode::EditExpired,
                format!(
                    "a message can be edited {} times",
                    self.config.edit_max_count
                ),
            ));
        }
        let body = self.edited_text(user, device, c, text).await?;
        // Who the message mentions from now on (its entry in the mention counts).
        let mut mentions = body.mentions.clone();
        if body.mention_all {
            mentions.push(courier_storage::MENTION_ALL);
        }
        let event = pb::MessageBody {
            content: Some(Content::System(pb::SystemEvent {
                event: Some(Event::MessageEdited(pb::MessageEdited {
                    seq,
                    by_user: user,
                    text: Some(body),
                })),
            })),
        }
        .encode_to_vec();
        if event.len() + DELIVER_ENVELOPE_BYTES > self.config.max_frame_bytes {
            return Err(ApiError::new(
                ErrorCode::FrameTooLarge,
                "the edited message does not fit a frame",
            ));
        }
        let client_msg_id = crate::api::system_msg_id();
        let appended = self
            .submit_append(AppendRequest {
                conversation: *c,
                sender: user,
                sender_device: device.to_owned(),
                client_msg_id,
                body: event.into(),
                reply_to_seq: seq,
                recalls: 0,
                mentions,
                edits: Some(EditOf {
                    target: seq,
                    keep_versions: self.config.edit_keep_versions,
                }),
            })
            .await?
            .await?;
        Ok(pb::EditAck {
            conversation: c.to_string(),
            seq,
            event_seq: appended.seq,
            edited_at_ms: appended.server_time_ms,
        })
    }

    /// The new text as it will be stored: checked as a sent text is, mentions kept
    /// only where they may reach, and past the before-send hook.
    async fn edited_text(
        &self,
        user: u64,
        device: &str,
        c: &ConversationId,
        text: pb::Text,
    ) -> Result<pb::Text, ApiError> {
        self.validate_text(&text.text)?;
        let mentions = if text.mentions.is_empty() {
            Vec::new()
        } else {
            self.reachable_mentions(user, c, &text.mentions).await?
        };
        if text.mention_all {
            self.check_mention_all(user, c).await?;
        }
        let text = pb::Text {
            text: text.text,
            mentions,
            mention_all: text.mention_all,
        };
        let Some(hook) = &self.before_send else {
            return Ok(text);
        };
        let body = pb::MessageBody {
            content: Some(Content::Text(text)),
        };
        let checked = self
            .ask_before_send(
                hook,
                &c.to_string(),
                user,
                device,
                &crate::api::system_msg_id(),
                body.encode_to_vec().into(),
            )
            .await?;
        match pb::MessageBody::decode(checked).map(|b| b.content) {
            Ok(Some(Content::Text(text))) => Ok(text),
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "the hook's text is no text",
            )),
        }
    }
}
