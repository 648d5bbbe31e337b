//! Recall: the sender may recall its own message within `recall_window_ms`; a group's
//! owner and admins may recall any message in it. The content is erased from the
//! store (a tombstone keeps who and when), and a `MessageRecalled` event is appended
//! to the log with its own seq and delivered like any message — so a client that
//! pulled the message earlier learns of the recall on its next sync from its cursor.

use courier_protocol::pb::{self, message_body::Content, system_event::Event};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, RecallRefusal, Role};
use prost::Message as _;

use crate::api::Api;
use crate::error::ApiError;

impl From<RecallRefusal> for ApiError {
    fn from(r: RecallRefusal) -> Self {
        match r {
            RecallRefusal::NoMessage => ApiError::new(ErrorCode::NotFound, "no such message"),
            RecallRefusal::AlreadyRecalled => {
                ApiError::new(ErrorCode::AlreadyExists, "already recalled")
            }
        }
    }
}

impl Api {
    /// Recalls message `seq` of `c` on behalf of `user`; returns the recall event's seq.
    pub async fn recall(
        &self,
        user: u64,
        device: &str,
        c: &ConversationId,
        seq: u64,
    ) -> Result<pb::RecallAck, ApiError> {
        let message = self.visible_message(user, c, seq).await?;
        if message.recalled.is_some() {
            return Err(RecallRefusal::AlreadyRecalled.into());
        }
        let is_system = pb::MessageBody::decode(message.body.clone())
            .is_ok_and(|b| matches!(b.content, Some(Content::System(_))));
        if is_system {
            return Err(ApiError::invalid("system events cannot be recalled"));
        }
        let now = courier_storage::now_ms();
        let moderator = match c {
            ConversationId::Group(g) => self
                .store
                .member(*g, user)
                .await?
                .is_some_and(|m| m.role >= Role::Admin),
            ConversationId::Direct { .. } => false,
        };
        if message.sender == user && !moderator {
            if now.saturating_sub(message.server_time_ms) > self.config.recall_window_ms {
                return Err(ApiError::new(
                    ErrorCode::RecallExpired,
                    format!(
                        "messages can be recalled for {} s",
                        self.config.recall_window_ms / 1000
                    ),
                ));
            }
        } else if !moderator {
            return Err(ApiError::forbidden(
                "only the sender or a group admin may recall this message",
            ));
        }
        let body = pb::MessageBody {
            content: Some(Content::System(pb::SystemEvent {
                event: Some(Event::MessageRecalled(pb::MessageRecalled {
                    seq,
                    by_user: user,
                })),
            })),
        };
        // One commit: the erasure and its event, both or neither after any crash.
        let appended = self
            .submit_append(AppendRequest {
                conversation: *c,
                sender: user,
                sender_device: device.to_owned(),
                client_msg_id: crate::api::system_msg_id(),
                body: body.encode_to_vec().into(),
                reply_to_seq: seq,
                recalls: seq,
                mentions: Vec::new(),
                edits: None,
            })
            .await?
            .await?;
        Ok(pb::RecallAck {
            conversation: c.to_string(),
            seq,
            event_seq: appended.seq,
        })
    }
}
