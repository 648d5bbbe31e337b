//! What each binary-protocol frame means once a session is authenticated.
//!
//! The connection layer hands every decoded frame to [`Api::on_frame`] (through its
//! [`Service`] trait, which `Api` implements here) and does what
//! the returned [`Handled`] says: write a reply now, run a future (sends wait for the
//! group commit and run concurrently, up to the per-connection in-flight limit), or
//! nothing.

use std::sync::Arc;

use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::wire::{Inbound, SendView};
use courier_protocol::{ErrorCode, PROTOCOL_VERSION};
use courier_storage::HistoryRange;
use prost::Message as _;

use crate::api::{convert, Api};
use crate::connection::registry::Credential;
use crate::connection::service::{BoxFuture, Service};
pub use crate::connection::service::{Handled, Pending, SessionCredential, SessionCtx};
use crate::error::ApiError;

impl Api {
    /// Checks a Hello and builds the Welcome; errors end the connection.
    pub async fn handshake(
        &self,
        hello: &pb::Hello,
        session_id: u64,
    ) -> Result<(SessionCtx, SessionCredential, Frame), ApiError> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                    hello.protocol_version
                ),
            ));
        }
        crate::api::hygiene::check_id(
            "device_id",
            &hello.device_id,
            courier_storage::MAX_DEVICE_ID_BYTES,
        )?;
        if hello.token.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "Hello needs a token",
            ));
        }
        let token = self.authenticate(&hello.token).await?;
        let user = token.user_id;
        // The device record keeps this token: removing the device revokes it.
        self.bind_device(user, &hello.device_id, hello.platform, &token.hash)
            .await?;
        let name = self.name_of(user).await?;
        let welcome = pb::Welcome {
            protocol_version: PROTOCOL_VERSION,
            user_id: user,
            session_id: format!("{session_id:x}"),
            server_time_ms: courier_storage::now_ms(),
            heartbeat_interval_ms: self.config.heartbeat_interval_ms as u32,
            idle_timeout_ms: self.config.idle_timeout_ms as u32,
            max_frame_bytes: self.config.max_frame_bytes as u32,
            max_text_bytes: self.config.max_text_bytes as u32,
            user_name: name,
        };
        let credential = SessionCredential {
            hash: token.hash,
            expires_ms: token.expires_ms,
        };
        let ctx = SessionCtx {
            user_id: user,
            device_id: hello.device_id.as_str().into(),
            session_id,
            credential,
        };
        Ok((ctx, credential, Frame::new(0, Kind::Welcome(welcome))))
    }

    /// Handles one frame of an authenticated session. The session awaits this inline,
    /// frame by frame, so what it does before returning happens in frame order (a
    /// send is queued for storage here; only its acknowledgement runs later).
    pub async fn on_frame(self: &Arc<Self>, ctx: &SessionCtx, frame: Inbound) -> Handled {
        let frame = match frame {
            Inbound::Send(id, send) => return self.on_send(ctx, id, send).await,
            Inbound::Other(frame) => *frame,
        };
        let id = frame.request_id;
        let reply = |result: Result<Kind, ApiError>| match result {
            Ok(kind) => Handled::Reply(Frame::new(id, kind)),
            Err(e) => Handled::Reply(e.to_frame(id)),
        };
        let Some(kind) = frame.kind else {
            return Handled::Reply(Frame::error(
                id,
                ErrorCode::UnknownFrame,
                "unknown frame type",
            ));
        };
        match kind {
            Kind::Heartbeat(_) => reply(Ok(Kind::HeartbeatAck(pb::HeartbeatAck {
                server_time_ms: courier_storage::now_ms(),
            }))),
            Kind::Send(send) => self.on_send(ctx, id, send.into()).await,
            Kind::DeliveryAck(ack) => {
                match self.delivery_ack(ctx.user_id, &ctx.device_id, &ack).await {
                    Ok(()) => Handled::Nothing,
                    Err(e) => Handled::Reply(e.to_frame(id)),
                }
            }
            Kind::Typing(typing) => match self.typing(ctx.user_id, &ctx.device_id, &typing).await {
                Ok(()) => Handled::Nothing,
                Err(e) => Handled::Reply(e.to_frame(id)),
            },
            Kind::SetPushToken(set) => reply(
                async {
                    let registration = crate::api::push::Registration::from_frame(&set)?;
                    let registered = self
                        .set_push_token(
                            ctx.user_id,
                            &ctx.device_id,
                            &ctx.credential.hash,
                            ctx.credential.expires_ms,
                            registration,
                        )
                        .await?;
                    Ok(Kind::PushTokenSet(pb::PushTokenSet { registered }))
                }
                .await,
            ),
            Kind::PullHistory(pull) => reply(
                self.pull_history(ctx.user_id, &pull)
                    .await
                    .map(Kind::HistoryPage),
            ),
            Kind::SyncRequest(req) => {
                reply(self.sync(ctx.user_id, &req).await.map(Kind::SyncResponse))
            }
            // Durable in the background (answered only if it failed): the session
            // goes on reading meanwhile.
            Kind::ReadReport(report) => match self.parse_conversation(&report.conversation) {
                Ok(c) => {
                    let api = self.clone();
                    let ctx = ctx.clone();
                    Handled::Later(Box::pin(async move {
                        api.mark_read(ctx.user_id, &c, report.seq, Some(&ctx.device_id))
                            .await
                            .err()
                            .map(|e| e.to_frame(id))
                    }))
                }
                Err(e) => Handled::Reply(e.to_frame(id)),
            },
            Kind::Recall(recall) => {
                let api = self.clone();
                let ctx = ctx.clone();
                Handled::Later(Box::pin(async move {
                    let done = match api.parse_conversation(&recall.conversation) {
                        Ok(c) => {
                            api.recall(ctx.user_id, &ctx.device_id, &c, recall.seq)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    Some(match done {
                        Ok(ack) => Frame::new(id, Kind::RecallAck(ack)),
                        Err(e) => e.to_frame(id),
                    })
                }))
            }
            Kind::Edit(edit) => {
                let api = self.clone();
                let ctx = ctx.clone();
                Handled::Later(Box::pin(async move {
                    let done = match api.parse_conversation(&edit.conversation) {
                        Ok(c) => {
                            let text = edit.text.unwrap_or_default();
                            api.edit(ctx.user_id, &ctx.device_id, &c, edit.seq, text)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    Some(match done {
                        Ok(ack) => Frame::new(id, Kind::EditAck(ack)),
                        Err(e) => e.to_frame(id),
                    })
                }))
            }
            Kind::React(react) => {
                let api = self.clone();
                let ctx = ctx.clone();
                Handled::Later(Box::pin(async move {
                    let done = match api.parse_conversation(&react.conversation) {
                        Ok(c) => {
                            api.react(ctx.user_id, &c, react.seq, &react.emoji, !react.remove)
                                .await
                        }
                        Err(e) => Err(e),
                    };
                    Some(match done {
                        Ok(ack) => Frame::new(id, Kind::ReactAck(ack)),
                        Err(e) => e.to_frame(id),
                    })
                }))
            }
            Kind::Hide(hide) => {
                let api = self.clone();
                let ctx = ctx.clone();
                Handled::Later(Box::pin(async move {
                    let done = match api.parse_conversation(&hide.conversation) {
                        Ok(c) => api.hide(ctx.user_id, &ctx.device_id, &c, &hide).await,
                        Err(e) => Err(e),
                    };
                    Some(match done {
                        Ok(hidden) => Frame::new(id, Kind::Hidden(hidden)),
                        Err(e) => e.to_frame(id),
                    })
                }))
            }
            Kind::PresenceSubscribe(sub) => match self.presence_subscribe(ctx.user_id, sub).await {
                Ok(()) => Handled::Nothing,
                Err(e) => Handled::Reply(e.to_frame(id)),
            },
            Kind::Hello(_) => Handled::Reply(Frame::error(
                id,
                ErrorCode::UnexpectedFrame,
                "already authenticated",
            )),
            other => {
                let name = Frame::new(0, other).kind_name();
                Handled::Reply(Frame::error(
                    id,
                    ErrorCode::UnexpectedFrame,
                    format!("{name} is a server-to-client frame"),
                ))
            }
        }
    }

    /// Watches the presence of those of `sub.user_ids` the user may see, for a lease.
    async fn presence_subscribe(
        &self,
        user: u64,
        sub: pb::PresenceSubscribe,
    ) -> Result<(), ApiError> {
        self.limits
            .user(crate::api::limits::Limit::Presence, user)?;
        let lease = u64::from(sub.lease_ms).min(self.config.presence_max_lease_ms);
        let mut targets = sub.user_ids;
        targets.truncate(crate::api::presence::MAX_SUBSCRIBE_TARGETS);
        let mut allowed = Vec::with_capacity(targets.len());
        for target in targets {
            if self.may_see_presence(user, target).await? {
                allowed.push(target);
            }
        }
        self.presence
            .subscribe(user, allowed, std::time::Duration::from_millis(lease));
        Ok(())
    }

    /// Queues a send for storage; the acknowledgement is answered once it is durable.
    async fn on_send(&self, ctx: &SessionCtx, id: u64, send: SendView) -> Handled {
        match self.submit_send(ctx.user_id, &ctx.device_id, send).await {
            Ok(ack) => Handled::Later(Box::pin(async move {
                Some(match ack.await {
                    Ok(ack) => Frame::new(id, Kind::SendAck(ack)),
                    Err(e) => e.to_frame(id),
                })
            })),
            Err(e) => Handled::Reply(e.to_frame(id)),
        }
    }

    async fn pull_history(
        &self,
        user: u64,
        pull: &pb::PullHistory,
    ) -> Result<pb::HistoryPage, ApiError> {
        let c = self.parse_conversation(&pull.conversation)?;
        let range = match (pb::Direction::try_from(pull.direction), pull.cursor) {
            (Ok(pb::Direction::Forward), after) => HistoryRange::After(after),
            (_, 0) => HistoryRange::Latest,
            (_, before) => HistoryRange::Before(before),
        };
        let page = self.history(user, &c, range, pull.limit as usize).await?;
        let mut reactions = self
            .reactions_of(user, &c, page.messages.iter().map(|m| m.seq))
            .await?;
        let mut out = pb::HistoryPage {
            conversation: pull.conversation.clone(),
            messages: page
                .messages
                .iter()
                .map(|m| pb::Message {
                    reactions: convert::reactions_pb(&reactions.remove(&m.seq).unwrap_or_default()),
                    ..convert::to_pb(m)
                })
                .collect(),
            has_more: page.has_more,
            retained_from_seq: self.retention_floor(&c).await? + 1,
        };
        // A page must fit in one frame: shed messages from the far end of the page
        // (the client pages on from where this one stops).
        let budget = self.config.max_frame_bytes.saturating_sub(64);
        while out.encoded_len() > budget && !out.messages.is_empty() {
            match range {
                HistoryRange::After(_) => out.messages.pop(),
                _ => Some(out.messages.remove(0)),
            };
            out.has_more = true;
        }
        Ok(out)
    }
}

impl Service for Api {
    fn handshake<'a>(
        &'a self,
        hello: &'a pb::Hello,
        session_id: u64,
    ) -> BoxFuture<'a, Result<(SessionCtx, SessionCredential, Frame), ApiError>> {
        Box::pin(Api::handshake(self, hello, session_id))
    }

    fn on_frame<'a>(
        self: Arc<Self>,
        ctx: &'a SessionCtx,
        frame: Inbound,
    ) -> BoxFuture<'a, Handled> {
        Box::pin(async move { Api::on_frame(&self, ctx, frame).await })
    }

    fn user_online(&self, user: u64) -> Option<BoxFuture<'static, ()>> {
        if let Some(events) = &self.events {
            events.presence(user, true);
        }
        match &self.cluster {
            Some(cluster) => cluster.local_online(user),
            None => {
                self.presence.online(user);
                None
            }
        }
    }

    fn user_offline(&self, user: u64) {
        if let Some(events) = &self.events {
            events.presence(user, false);
        }
        match &self.cluster {
            Some(cluster) => cluster.local_offline(user),
            None => self.presence.offline(user),
        }
    }

    fn credential_expires<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let info = self.store.token_info_by_hash(credential).await;
            info.ok().flatten().map(|t| t.expires_ms)
        })
    }
}
