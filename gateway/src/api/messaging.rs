//! Messaging: authorize and store sends, page history, move cursors, sync.

use courier_protocol::pb::{self, message_body::Content};
use courier_protocol::wire::{plain_text, SendView};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, HistoryPage, HistoryRange, StoredMessage};
use prost::Message as _;

use crate::api::hygiene::check_id;
use crate::api::limits::Limit;
use crate::api::{convert, Api};
use crate::error::ApiError;

/// Room kept in a frame for the `Deliver` envelope around a body: conversation id,
/// seq, sender, a sender device and a client message id of up to 128 bytes each,
/// times, recall marks and field tags, with margin.
pub const DELIVER_ENVELOPE_BYTES: usize = 512;

/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 64;

/// Conversations per sync page when the client names no limit.
pub const DEFAULT_SYNC_PAGE: usize = 100;
/// Largest sync page.
pub const MAX_SYNC_PAGE: usize = 500;

impl Api {
    /// How many of `c`'s messages up to `last_seq` above `read` are news to a reader:
    /// all of them but edit and reaction events, which change other messages.
    pub(crate) async fn unread(
        &self,
        c: &ConversationId,
        last_seq: u64,
        read: u64,
    ) -> Result<u64, ApiError> {
        if last_seq <= read {
            return Ok(0);
        }
        let quiet = self.store.quiet_count(c, read).await?;
        Ok((last_seq - read).saturating_sub(quiet))
    }

    /// Parses a conversation id from a client.
    pub fn parse_conversation(&self, s: &str) -> Result<ConversationId, ApiError> {
        s.parse()
            .map_err(|e: courier_protocol::ParseConversationError| ApiError::invalid(e.to_string()))
    }

    /// Checks that `user` may read and write `c`; returns the seq above which the
    /// user may read (a group member's join point, 0 for direct conversations).
    pub async fn authorize(&self, user: u64, c: &ConversationId) -> Result<u64, ApiError> {
        match *c {
            ConversationId::Direct { .. } if c.peer_of(user).is_some() => Ok(0),
            ConversationId::Direct { .. } => Err(ApiError::forbidden(
                "not a participant of this conversation",
            )),
            ConversationId::Group(g) => match self.store.member(g, user).await? {
                Some(member) => Ok(member.joined_seq),
                None if self.store.group(g).await?.is_some() => {
                    Err(ApiError::forbidden("not a member of this group"))
                }
                None => Err(ApiError::new(
                    ErrorCode::UnknownConversation,
                    "no such group",
                )),
            },
        }
    }

    /// Message `seq` of `c` as `user` may see it (a group member sees nothing from
    /// before its join): `NOT_FOUND` when there is none.
    pub async fn visible_message(
        &self,
        user: u64,
        c: &ConversationId,
        seq: u64,
    ) -> Result<StoredMessage, ApiError> {
        let floor = self.authorize(user, c).await?;
        self.store
            .message(c, seq)
            .await?
            .filter(|_| seq > floor)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such message"))
    }

    /// The send-path check: membership from the in-memory member cache, blocks for
    /// direct conversations.
    pub(crate) async fn authorize_send(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<(), ApiError> {
        match *c {
            ConversationId::Direct { .. } => {
                let peer = c
                    .peer_of(user)
                    .ok_or_else(|| ApiError::forbidden("not a participant of this conversation"))?;
                let relation = self.store.relation(user, peer).await?;
                if relation.blocked_by {
                    return Err(ApiError::new(ErrorCode::Blocked, "this user blocks you"));
                }
                if relation.blocking {
                    return Err(ApiError::new(
                        ErrorCode::Blocked,
                        "you block this user; unblock first",
                    ));
                }
                if self.store.account(peer).await?.is_none() {
                    return Err(ApiError::new(
                        ErrorCode::UnknownUser,
                        format!("no user with id {peer}"),
                    ));
                }
                self.limits.user(Limit::Send, user)?;
                // Strangers get a much smaller budget: not friends, and the peer has
                // never answered in this conversation.
                if self.limits.enabled()
                    && !relation.friend
                    && !self.store.has_sent(c, peer).await?
                {
                    self.limits.user(Limit::StrangerSend, user)?;
                }
                Ok(())
            }
            ConversationId::Group(g) => {
                if !self.members.contains(g, user).await? {
                    self.authorize(user, c).await?;
                }
                self.limits.user(Limit::Send, user)
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
        self.authorize_send(user, &c).await?;
        let client_msg_id = send.client_msg_id().to_owned();
        // Delivered to every recipient device: an id, not a place for control codes.
        check_id(
            "client_msg_id",
            &client_msg_id,
            courier_storage::MAX_CLIENT_MSG_ID_BYTES,
        )?;
        // Stored and delivered as the client encoded it, once it decodes and passes.
        let encoded_body = send
            .body_bytes()
            .ok_or_else(|| ApiError::invalid("a message needs a body"))?;
        let mut mentions = Vec::new();
        let (encoded_body, media) = match plain_text(&encoded_body) {
            Some((text, false)) => {
                self.validate_text(text)?;
                (encoded_body, None)
            }
            _ => {
                let body = pb::MessageBody::decode(encoded_body.clone()).map_err(|e| {
                    ApiError::new(ErrorCode::MalformedFrame, format!("message body: {e}"))
                })?;
                self.validate_body(&body)?;
                match &body.content {
                    // Media is described by the server, from the stored blob.
                    Some(Content::Media(m)) => {
                        let media = self.server_media(user, m).await?;
                        let sha256 = media.sha256.clone();
                        let body = pb::MessageBody {
                            content: Some(Content::Media(media)),
                        };
                        (body.encode_to_vec().into(), Some(sha256))
                    }
                    // Mentions reach people: only participants, never across a block;
                    // everyone only where the sender may.
                    Some(Content::Text(t)) if !t.mentions.is_empty() || t.mention_all => {
                        if t.mention_all {
                            self.check_mention_all(user, &c).await?;
                        }
                        let kept = self.reachable_mentions(user, &c, &t.mentions).await?;
                        mentions = kept.clone();
                        if t.mention_all {
                            mentions.push(courier_storage::MENTION_ALL);
                        }
                        if kept == t.mentions {
                            (encoded_body, None)
                        } else {
                            let body = pb::MessageBody {
                                content: Some(Content::Text(pb::Text {
                                    text: t.text.clone(),
                                    mentions: kept,
                                    mention_all: t.mention_all,
                                })),
                            };
                            (body.encode_to_vec().into(), None)
                        }
                    }
                    _ => (encoded_body, None),
                }
            }
        };
        let encoded_body = match &self.before_send {
            Some(hook) => {
                self.ask_before_send(
                    hook,
                    send.conversation(),
                    user,
                    device,
                    &client_msg_id,
                    encoded_body,
                )
                .await?
            }
            None => encoded_body,
        };
        // The Deliver frame wraps the body in an envelope; both must fit the frame
        // size the server advertises.
        if encoded_body.len() + DELIVER_ENVELOPE_BYTES > self.config.max_frame_bytes {
            return Err(ApiError::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "a message body may take at most {} bytes",
                    self.config.max_frame_bytes - DELIVER_ENVELOPE_BYTES
                ),
            ));
        }
        let appended = self
            .submit_append(AppendRequest {
                conversation: c,
                sender: user,
                sender_device: device.to_owned(),
                client_msg_id: client_msg_id.clone(),
                body: encoded_body,
                reply_to_seq: send.reply_to_seq,
                recalls: 0,
                mentions,
                edits: None,
            })
            .await?;
        let store = self.store.clone();
        Ok(async move {
            let appended = appended.await?;
            if let Some(sha256) = media {
                // Referenced blobs are never garbage-collected.
                store
                    .update_blob(&sha256, courier_storage::BlobUpdate::Referenced)
                    .await?;
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

    /// The body to store after the application's before-send hook has seen it: the
    /// same, or its text rewritten (mentions kept); or the hook's refusal.
    pub(crate) async fn ask_before_send(
        &self,
        hook: &crate::api::webhooks::BeforeSendHook,
        conversation: &str,
        user: u64,
        device: &str,
        client_msg_id: &str,
        encoded: bytes::Bytes,
    ) -> Result<bytes::Bytes, ApiError> {
        use crate::api::webhooks::Verdict;
        let mut body = pb::MessageBody::decode(encoded.clone())
            .map_err(|e| ApiError::new(ErrorCode::MalformedFrame, format!("message body: {e}")))?;
        match hook
            .check(conversation, user, device, client_msg_id, &body)
            .await?
        {
            Verdict::Allow => Ok(encoded),
            Verdict::Rewrite(text) => {
                self.validate_text(&text)?;
                if let Some(Content::Text(t)) = &mut body.content {
                    t.text = text;
                }
                Ok(body.encode_to_vec().into())
            }
        }
    }

    /// Queues `req` for storage, here or (past one node) at the node that owns its
    /// conversation; the future resolves once it is durable. Submissions made one
    /// after another are stored in that order.
    pub(crate) async fn submit_append(
        &self,
        req: AppendRequest,
    ) -> Result<
        impl std::future::Future<Output = Result<courier_storage::Appended, ApiError>> + Send + 'static,
        ApiError,
    > {
        use futures_util::future::Either;
        if let Some(cluster) = &self.cluster {
            if let Some(owner) = cluster.owner_of(&req.conversation) {
                return Ok(Either::Left(cluster.forward_append(&owner, req).await));
            }
        }
        let ticket = self.store.submit(req).await?;
        Ok(Either::Right(async move { Ok(ticket.wait().await?) }))
    }

    /// Whether `user` may mention everyone in `c`: in groups, owner and admins (or
    /// every member with `mention_all_members`).
    pub(crate) async fn check_mention_all(
        &self,
        user: u64,
        c: &ConversationId,
    ) -> Result<(), ApiError> {
        let ConversationId::Group(g) = *c else {
            return Err(ApiError::invalid("@all is for groups"));
        };
        if self.config.mention_all_members {
            return Ok(());
        }
        let role = self.store.member(g, user).await?.map(|m| m.role);
        if role.is_some_and(|r| r >= courier_storage::Role::Admin) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "only the group's owner and admins may mention everyone",
            ))
        }
    }

    /// Of the users a message from `user` in `c` mentions, those it may reach:
    /// participants of `c` between whom and the sender no block stands.
    pub(crate) async fn reachable_mentions(
        &self,
        user: u64,
        c: &ConversationId,
        mentions: &[u64],
    ) -> Result<Vec<u64>, ApiError> {
        let mut kept = Vec::with_capacity(mentions.len().min(MAX_MENTIONS));
        for &m in mentions.iter().take(MAX_MENTIONS) {
            if kept.contains(&m) {
                continue;
            }
            let participant = match *c {
                ConversationId::Direct { .. } => c.peer_of(user) == Some(m) || m == user,
                ConversationId::Group(g) => self.members.contains(g, m).await?,
            };
            if !participant {
                continue;
            }
            let r = self.store.relation(user, m).await?;
            if !r.blocking && !r.blocked_by {
                kept.push(m);
            }
        }
        Ok(kept)
    }

    pub(crate) fn validate_text(&self, text: &str) -> Result<(), ApiError> {
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
            Some(Content::Media(m)) if m.sha256.is_empty() => {
                Err(ApiError::invalid("media names its upload by sha256"))
            }
            Some(Content::Media(_)) => Ok(()),
            Some(Content::Custom(c)) => check_id("custom content type", &c.r#type, 128),
            Some(Content::System(_)) => Err(ApiError::forbidden(
                "system events are written by the server only",
            )),
        }
    }

    /// A history page of `c` for `user`. `limit` 0 means the default page size.
    pub async fn history(
        &self,
        user: u64,
        c: &ConversationId,
        range: HistoryRange,
        limit: usize,
    ) -> Result<HistoryPage, ApiError> {
        let view = self.view_of(user, c).await?;
        let floor = self
            .authorize(user, c)
            .await?
            .max(self.retention_floor(c).await?)
            .max(view.cleared_seq);
        let limit = if limit == 0 {
            self.config.history_default_page
        } else {
            limit.min(self.config.history_max_page)
        };
        let mut range = range;
        // What the user deleted for itself is gone from its pages; a page it hid
        // whole gives way to the next (a few at most), so paging goes on.
        for _ in 0..8 {
            let mut page = self.store.history_above(c, range, limit, floor).await?;
            let (Some(first), Some(last)) = (page.messages.first(), page.messages.last()) else {
                return Ok(page);
            };
            let (first, last) = (first.seq, last.seq);
            page.messages
                .retain(|m| view.hidden.binary_search(&m.seq).is_err());
            if !page.messages.is_empty() || !page.has_more {
                return Ok(page);
            }
            range = match range {
                HistoryRange::After(_) => HistoryRange::After(last),
                HistoryRange::Before(_) | HistoryRange::Latest => HistoryRange::Before(first),
            };
        }
        Ok(HistoryPage {
            messages: Vec::new(),
            has_more: true,
        })
    }

    /// The highest seq of `c` that is past the retention depth (0 when everything
    /// is retained): history at or below it is not served.
    pub async fn retention_floor(&self, c: &ConversationId) -> Result<u64, ApiError> {
        let pruned = self.store.first_retained_seq(c).await?.saturating_sub(1);
        let by_count = match self.config.history_retention_messages {
            0 => 0,
            depth => self.store.last_seq(c).await?.saturating_sub(depth),
        };
        Ok(pruned.max(by_count))
    }

    /// Records a cumulative delivery acknowledgement from one of `user`'s devices.
    /// The device's acknowledgement also settles its pending push decisions.
    pub async fn delivery_ack(
        &self,
        user: u64,
        device: &std::sync::Arc<str>,
        ack: &pb::DeliveryAck,
    ) -> Result<(), ApiError> {
        let c = self.parse_conversation(&ack.conversation)?;
        self.authorize(user, &c).await?;
        if let Some(push) = &self.push {
            push.delivered(user, device, &c, ack.seq);
        }
        match self.store.note_delivered(user, &c, ack.seq).await {
            // A conversation that has no messages yet is not in the user's index.
            Err(courier_storage::StorageError::NotParticipant) => Ok(()),
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// The conversations of `user`, with what changed since the client's cursors.
    pub async fn sync(
        &self,
        user: u64,
        req: &pb::SyncRequest,
    ) -> Result<pb::SyncResponse, ApiError> {
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
        // Conversations whose view this user changed on another device since the
        // client's view version are listed even without new messages.
        let (view_version, changed) = self
            .store
            .views_changed_since(user, req.view_version)
            .await?;
        let changed: std::collections::HashSet<ConversationId> = changed.into_iter().collect();
        let mut conversations = Vec::new();
        let mut next_page_token = String::new();
        let budget = self.config.max_frame_bytes.saturating_sub(64);
        let mut bytes = 0;
        // The store lists a user's conversations in id order: pages continue after
        // the last id of the previous page.
        for entry in self.store.conversations(user).await? {
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
            let view_changed = changed.contains(&entry.conversation);
            if cursor >= entry.last_seq && !req.cursors.is_empty() && !view_changed {
                continue;
            }
            let view = match view_changed {
                true => self.view_of(user, &entry.conversation).await?,
                false => Default::default(),
            };
            let state = self.sync_state(user, &entry, cursor, view).await?;
            // The page must fit in one frame: past the budget, the next page starts
            // here (a state holds at most one message, which fits a frame alone).
            let size = state.encoded_len() + 8;
            if bytes + size > budget && !conversations.is_empty() {
                next_page_token = conversations
                    .last()
                    .map(|s: &pb::ConversationState| s.conversation.clone())
                    .unwrap_or_default();
                break;
            }
            bytes += size;
            conversations.push(state);
        }
        Ok(pb::SyncResponse {
            conversations,
            next_page_token,
            server_time_ms: courier_storage::now_ms(),
            view_version,
        })
    }

    /// One conversation's entry in a sync answer for `user`, whose client holds it
    /// up to `cursor`; `view` is the user's view of it when that changed (else the
    /// default, which hides nothing).
    async fn sync_state(
        &self,
        user: u64,
        entry: &courier_storage::UserConversation,
        cursor: u64,
        view: courier_storage::HiddenView,
    ) -> Result<pb::ConversationState, ApiError> {
        let c = &entry.conversation;
        let floor = entry.state.joined_seq.max(view.cleared_seq);
        let shown = entry.last_seq > floor && view.hidden.binary_search(&entry.last_seq).is_err();
        let last_message = match shown {
            true => self.store.message(c, entry.last_seq).await?,
            false => None,
        };
        let last_message = match last_message {
            Some(m) => {
                let counts = self.store.reaction_counts(c, m.seq, m.seq, user).await?;
                Some(pb::Message {
                    reactions: convert::reactions_pb(&counts),
                    ..convert::to_pb(&m)
                })
            }
            None => None,
        };
        let read = entry.state.read_seq.max(floor);
        let mentions = match entry.last_seq > read {
            true => self.store.mention_count(c, user, read).await?,
            false => 0,
        };
        Ok(pb::ConversationState {
            conversation: c.to_string(),
            last_seq: entry.last_seq,
            read_seq: entry.state.read_seq,
            unread: self.unread(c, entry.last_seq, read).await?,
            new_since_cursor: entry.last_seq.saturating_sub(cursor),
            last_message,
            kind: if c.is_group() {
                pb::ConversationKind::Group as i32
            } else {
                pb::ConversationKind::Direct as i32
            },
            mentions,
            cleared_seq: view.cleared_seq,
            hidden: view.hidden,
        })
    }
}
