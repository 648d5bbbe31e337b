//! Messaging: authorize and store sends, page history, move cursors, sync.

use courier_protocol::pb::{self, message_body::Content};
use courier_protocol::wire::{plain_text_body, SendView};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, HistoryPage, HistoryRange, StoredMessage};
use prost::Message as _;

use crate::api::{convert, Api};
use crate::error::ApiError;

/// Conversations per sync page when the client names no limit.
pub const DEFAULT_SYNC_PAGE: usize = 100;
/// Largest sync page.
pub const MAX_SYNC_PAGE: usize = 500;

impl Api {
    /// Parses a conversation id from a client.
    pub fn parse_conversation(&self, s: &str) -> Result<ConversationId, ApiError> {
        s.parse()
            .map_err(|e: courier_protocol::ParseConversationError| ApiError::invalid(e.to_string()))
    }

    /// Checks that `user` may read and write `c`; returns the seq above which the
    /// user may read (a group member's join point, 0 for direct conversations).
    pub fn authorize(&self, user: u64, c: &ConversationId) -> Result<u64, ApiError> {
        match *c {
            ConversationId::Direct { .. } if c.peer_of(user).is_some() => Ok(0),
            ConversationId::Direct { .. } => Err(ApiError::forbidden(
                "not a participant of this conversation",
            )),
            ConversationId::Group(g) => match self.store.member(g, user)? {
                Some(member) => Ok(member.joined_seq),
                None if self.store.group(g)?.is_some() => {
                    Err(ApiError::forbidden("not a member of this group"))
                }
                None => Err(ApiError::new(
                    ErrorCode::UnknownConversation,
                    "no such group",
                )),
            },
        }
    }

    /// The send-path check: membership from the in-memory member cache, blocks for
    /// direct conversations.
    fn authorize_send(&self, user: u64, c: &ConversationId) -> Result<(), ApiError> {
        match *c {
            ConversationId::Direct { .. } => {
                let peer = c
                    .peer_of(user)
                    .ok_or_else(|| ApiError::forbidden("not a participant of this conversation"))?;
                let relation = self.store.relation(user, peer)?;
                if relation.blocked_by {
                    return Err(ApiError::new(ErrorCode::Blocked, "this user blocks you"));
                }
                if relation.blocking {
                    return Err(ApiError::new(
                        ErrorCode::Blocked,
                        "you block this user; unblock first",
                    ));
                }
                if self.store.account(peer)?.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::UnknownUser,
                        format!("no user with id {peer}"),
                    ));
                }
                Ok(())
            }
            ConversationId::Group(g) => {
                if self.members.contains(g, user)? {
                    Ok(())
                } else {
                    self.authorize(user, c).map(drop)
                }
            }
        }
    }

    /// Stores a message from `user`'s `device` and returns its acknowledgement.
    /// Delivery to the recipients happens when the store commits (see `router`).
    pub async fn send(
        &self,
        user: u64,
        device: &str,
        send: SendView,
    ) -> Result<pb::SendAck, ApiError> {
        self.submit_send(user, device, send).await?.await
    }

    /// Checks a send and queues it for storage; the returned future resolves to the
    /// acknowledgement once the message is durable. Sends submitted in order from one
    /// connection get their seqs in that order.
    pub async fn submit_send(
        &self,
        user: u64,
        device: &str,
        send: SendView,
    ) -> Result<
        impl std::future::Future<Output = Result<pb::SendAck, ApiError>> + Send + 'static,
        ApiError,
    > {
        let c = self.parse_conversation(send.conversation())?;
        self.authorize_send(user, &c)?;
        let client_msg_id = send.client_msg_id().to_owned();
        if client_msg_id.is_empty()
            || client_msg_id.len() > courier_storage::MAX_CLIENT_MSG_ID_BYTES
        {
            return Err(ApiError::invalid("client_msg_id must be 1 to 128 bytes"));
        }
        // Stored and delivered as the client encoded it, once it decodes and passes.
        let encoded_body = send
            .body_bytes()
            .ok_or_else(|| ApiError::invalid("a message needs a body"))?;
        let media = match plain_text_body(&encoded_body) {
            Some(text) => {
                self.validate_text(text)?;
                None
            }
            None => {
                let body = pb::MessageBody::decode(encoded_body.clone()).map_err(|e| {
                    ApiError::new(ErrorCode::MalformedFrame, format!("message body: {e}"))
                })?;
                self.validate_body(&body)?;
                // A media message must point at an available blob the sender uploaded.
                match &body.content {
                    Some(Content::Media(m)) => {
                        self.check_media_use(user, &m.sha256)?;
                        Some(m.sha256.clone())
                    }
                    _ => None,
                }
            }
        };
        let ticket = self
            .store
            .submit(AppendRequest {
                conversation: c,
                sender: user,
                sender_device: device.to_owned(),
                client_msg_id: client_msg_id.clone(),
                body: encoded_body,
                reply_to_seq: send.reply_to_seq,
            })
            .await?;
        let store = self.store.clone();
        Ok(async move {
            let appended = ticket.wait().await?;
            if let Some(sha256) = media {
                // Referenced blobs are never garbage-collected.
                store.update_blob(&sha256, |b| b.referenced = true)?;
            }
            Ok(pb::SendAck {
                client_msg_id,
                conversation: send.conversation().to_owned(),
                seq: appended.seq,
                server_time_ms: appended.server_time_ms,
                duplicate: appended.duplicate,
            })
        })
    }

    fn validate_text(&self, text: &str) -> Result<(), ApiError> {
        if text.is_empty() {
            return Err(ApiError::invalid("text is empty"));
        }
        if text.len() > self.config.max_text_bytes {
            return Err(ApiError::new(
                ErrorCode::TextTooLong,
                format!("text is longer than {} bytes", self.config.max_text_bytes),
            ));
        }
        Ok(())
    }

    fn validate_body(&self, body: &pb::MessageBody) -> Result<(), ApiError> {
        match &body.content {
            None => Err(ApiError::invalid("a message body needs content")),
            Some(Content::Text(t)) => self.validate_text(&t.text),
            Some(Content::Media(m)) if m.url.is_empty() => {
                Err(ApiError::invalid("media needs a url"))
            }
            Some(Content::Media(_)) => Ok(()),
            Some(Content::Custom(c)) if c.r#type.is_empty() => {
                Err(ApiError::invalid("custom content needs a type"))
            }
            Some(Content::Custom(_)) => Ok(()),
            Some(Content::System(_)) => Err(ApiError::forbidden(
                "system events are written by the server only",
            )),
        }
    }

    /// A history page of `c` for `user`. `limit` 0 means the default page size.
    pub fn history(
        &self,
        user: u64,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage, ApiError> {
        let floor = self.authorize(user, c)?.max(self.retention_floor(c)?);
        let limit = if limit == 0 {
            self.config.history_default_page
        } else {
            limit.min(self.config.history_max_page)
        };
        Ok(self.store.history_above(c, range, limit, floor)?)
    }

    /// The highest seq of `c` that is past the retention depth (0 when everything
    /// is retained): history at or below it is not served.
    pub fn retention_floor(&self, c: &ConversationId) -> Result<u64, ApiError> {
        let pruned = self.store.first_retained_seq(c)?.saturating_sub(1);
        let by_count = match self.config.history_retention_messages {
            0 => 0,
            depth => self.store.last_seq(c)?.saturating_sub(depth),
        };
        Ok(pruned.max(by_count))
    }

    /// Records a cumulative delivery acknowledgement from one of `user`'s devices.
    pub fn delivery_ack(&self, user: u64, ack: &pb::DeliveryAck) -> Result<(), ApiError> {
        let c = self.parse_conversation(&ack.conversation)?;
        self.authorize(user, &c)?;
        match self.store.mark_delivered(user, &c, ack.seq) {
            // A conversation that has no messages yet is not in the user's index.
            Err(courier_storage::StorageError::NotParticipant) => Ok(()),
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// The conversations of `user`, with what changed since the client's cursors.
    pub fn sync(&self, user: u64, req: &pb::SyncRequest) -> Result<pb::SyncResponse, ApiError> {
        let mut cursors = std::collections::HashMap::new();
        for cursor in &req.cursors {
            cursors.insert(self.parse_conversation(&cursor.conversation)?, cursor.seq);
        }
        let after: Option<ConversationId> = match req.page_token.as_str() {
            "" => None,
            token => Some(self.parse_conversation(token)?),
        };
        let limit = match req.limit {
            0 => DEFAULT_SYNC_PAGE,
            n => (n as usize).min(MAX_SYNC_PAGE),
        };
        let mut conversations = Vec::new();
        let mut next_page_token = String::new();
        // The store lists a user's conversations in id order: pages continue after
        // the last id of the previous page.
        for entry in self.store.conversations(user)? {
            if after.is_some_and(|a| entry.conversation <= a) {
                continue;
            }
            if conversations.len() == limit {
                next_page_token = conversations
                    .last()
                    .map(|s: &pb::ConversationState| s.conversation.clone())
                    .unwrap_or_default();
                break;
            }
            let cursor = cursors
                .get(&entry.conversation)
                .copied()
                .unwrap_or(0)
                .max(entry.state.joined_seq);
            if cursor >= entry.last_seq && !req.cursors.is_empty() {
                continue;
            }
            let last_message = match entry.last_seq > entry.state.joined_seq {
                true => self.store.message(&entry.conversation, entry.last_seq)?,
                false => None,
            }
            .map(|m: StoredMessage| convert::to_pb(&m));
            conversations.push(pb::ConversationState {
                conversation: entry.conversation.to_string(),
                last_seq: entry.last_seq,
                read_seq: entry.state.read_seq,
                unread: entry
                    .last_seq
                    .saturating_sub(entry.state.read_seq.max(entry.state.joined_seq)),
                new_since_cursor: entry.last_seq.saturating_sub(cursor),
                last_message,
                kind: if entry.conversation.is_group() {
                    pb::ConversationKind::Group as i32
                } else {
                    pb::ConversationKind::Direct as i32
                },
            });
        }
        Ok(pb::SyncResponse {
            conversations,
            next_page_token,
            server_time_ms: courier_storage::now_ms(),
        })
    }

    /// The user a bearer token belongs to.
    pub fn authenticate_token(&self, token: &str) -> Result<u64, ApiError> {
        self.store
            .verify_token(token)?
            .ok_or_else(|| ApiError::new(ErrorCode::BadToken, "unknown or expired token"))
    }
}
