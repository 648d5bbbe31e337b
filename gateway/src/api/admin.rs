//! What the application's own backend does through the admin API (`/v1/admin`,
//! with the admin token or on the operator listener): import users, mint tokens,
//! send as a user or as the system, notify many users at once, end a user's or a
//! device's sessions, ban and unban, erase a user's data, and see who is online.

use courier_protocol::pb;
use courier_protocol::wire::SendView;
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{AppendRequest, StorageError};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::dto::{ErrorBody, LoginInfo};
use crate::api::hygiene::check_id;
use crate::api::Api;
use crate::error::ApiError;

/// Most users one import may carry.
pub const MAX_IMPORT: usize = 1_000;
/// Most recipients of one notification.
pub const MAX_NOTIFY: usize = 10_000;
/// The device name stored with messages the admin API sends.
pub const ADMIN_DEVICE: &str = "admin-api";

/// Users to create (or find).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportUsers {
    /// At most 1,000.
    pub users: Vec<ImportUser>,
}

/// One user to import.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportUser {
    /// The user name (1 to 32 of `a-z 0-9 _ - .`).
    pub name: String,
    /// A password account with this password; without one, an account the
    /// application vouches for (its tokens sign in, no password does).
    pub password: Option<String>,
}

/// What an import did, user by user, in the order given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedUsers {
    /// One entry per user given.
    pub users: Vec<ImportedUser>,
}

/// One user of an import.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportedUser {
    /// The name given.
    pub name: String,
    /// Its user id (absent when refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u64>,
    /// Created now (false: it existed).
    pub created: bool,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A message sent by the admin API.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AdminSend {
    /// The conversation (`d:<a>:<b>` or `g:<group>`).
    pub conversation: String,
    /// The sender (a participant); absent = the system (sender 0), which may write
    /// into any existing conversation.
    pub from: Option<u64>,
    /// The text.
    pub text: String,
    /// Idempotency key: a retry with the same key stores nothing new (default: a
    /// fresh one).
    pub client_msg_id: Option<String>,
}

/// Where a message was stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminSent {
    /// The conversation.
    pub conversation: String,
    /// Its seq there.
    pub seq: u64,
    /// When it was stored, ms since the epoch.
    pub server_time_ms: u64,
}

/// One text to many users, each in its direct conversation with `from`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Notify {
    /// The sender (an account of the application's, say "news").
    pub from: u64,
    /// The recipients (at most 10,000).
    pub user_ids: Vec<u64>,
    /// The text.
    pub text: String,
    /// Names this notification: a retry with the same id stores nothing twice
    /// (default: a fresh one).
    pub notification_id: Option<String>,
}

/// What a notification did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Notified {
    /// Recipients it was stored for.
    pub sent: u64,
    /// Recipients it was refused for (a block, an unknown user), with why.
    pub refused: Vec<NotifyRefusal>,
}

/// A recipient a notification did not reach.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotifyRefusal {
    /// The recipient.
    pub user_id: u64,
    /// Why.
    pub error: ErrorBody,
}

/// What erasing a user did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Erased {
    /// Messages of the user's replaced by tombstones (each with a recall event).
    pub messages: u64,
    /// Conversations looked through.
    pub conversations: u64,
    /// Relations removed (friendships, requests, follows both ways, blocks).
    pub relations: u64,
    /// Devices removed.
    pub devices: u64,
}

/// Who is online.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Online {
    /// Devices connected now (all users).
    pub devices_online: u64,
    /// The asked users' connected devices.
    pub users: Vec<UserOnline>,
}

/// One user's connected devices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserOnline {
    /// The user.
    pub user_id: u64,
    /// Devices connected now.
    pub devices: u64,
}

pub(crate) fn error_body(e: &ApiError) -> ErrorBody {
    ErrorBody {
        code: e.code as i32,
        name: e.name(),
        message: e.message.clone(),
    }
}

impl Api {
    /// Creates the users that do not exist yet; each entry says what happened.
    pub async fn import_users(&self, users: Vec<ImportUser>) -> Result<ImportedUsers, ApiError> {
        if users.len() > MAX_IMPORT {
            return Err(ApiError::invalid("at most 1000 users per import"));
        }
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let existed = self.store.account_by_name(&u.name).await?;
            let made = match (&u.password, existed) {
                (Some(password), None) => self
                    .passwords
                    .run(self.store.register(&u.name, password))
                    .await
                    .map(|a| (a.id, true)),
                (Some(_), Some(_)) => Err(StorageError::NameTaken.into()),
                (None, existed) => self
                    .store
                    .external_account(&u.name)
                    .await
                    .map(|a| (a.id, existed.is_none()))
                    .map_err(ApiError::from),
            };
            out.push(match made {
                Ok((id, created)) => ImportedUser {
                    name: u.name,
                    user_id: Some(id),
                    created,
                    error: None,
                },
                Err(e) => ImportedUser {
                    name: u.name,
                    user_id: None,
                    created: false,
                    error: Some(error_body(&e)),
                },
            });
        }
        Ok(ImportedUsers { users: out })
    }

    /// A new token for `user`, as a login would give it (none for a banned user).
    pub async fn mint_token(&self, user: u64) -> Result<LoginInfo, ApiError> {
        let name = self.require_user(user).await?;
        let session = self.store.issue_token(user).await?;
        let session = self.unless_banned_revoke(session).await?;
        Ok(LoginInfo {
            token: session.token,
            user_id: user,
            name,
            expires_at_ms: session.expires_ms,
        })
    }

    /// Stores a text as `from` (a participant, by the same rules as its own sends)
    /// or as the system.
    pub async fn admin_send(&self, send: AdminSend) -> Result<AdminSent, ApiError> {
        let client_msg_id = send
            .client_msg_id
            .unwrap_or_else(|| format!("admin-{}", crate::api::system_msg_id()));
        let body = pb::MessageBody::text(send.text.clone());
        let ack = match send.from {
            Some(from) => {
                let view = SendView::from(pb::Send {
                    client_msg_id,
                    conversation: send.conversation,
                    body: Some(body),
                    reply_to_seq: 0,
                });
                self.send(from, ADMIN_DEVICE, view).await?
            }
            None => {
                self.validate_text(&send.text)?;
                let c = self.parse_conversation(&send.conversation)?;
                self.require_conversation(&c).await?;
                let appended = self
                    .submit_append(AppendRequest {
                        conversation: c,
                        sender: 0,
                        sender_device: ADMIN_DEVICE.into(),
                        client_msg_id: client_msg_id.clone(),
                        body: body.encode_to_vec().into(),
                        reply_to_seq: 0,
                        recalls: 0,
                        mentions: Vec::new(),
                        edits: None,
                    })
                    .await?
                    .await?;
                pb::SendAck {
                    client_msg_id,
                    conversation: send.conversation,
                    seq: appended.seq,
                    server_time_ms: appended.server_time_ms,
                    duplicate: appended.duplicate,
                }
            }
        };
        Ok(AdminSent {
            conversation: ack.conversation,
            seq: ack.seq,
            server_time_ms: ack.server_time_ms,
        })
    }

    /// Whether `c` exists: its group, or both users of a direct conversation.
    async fn require_conversation(&self, c: &ConversationId) -> Result<(), ApiError> {
        let exists = match c {
            ConversationId::Group(g) => self.store.group(*g).await?.is_some(),
            ConversationId::Direct { low, high } => {
                self.store.account(*low).await?.is_some()
                    && self.store.account(*high).await?.is_some()
            }
        };
        match exists {
            true => Ok(()),
            false => Err(ApiError::new(
                ErrorCode::UnknownConversation,
                "no such conversation",
            )),
        }
    }

    /// Stores `text` from `from` in its direct conversation with each recipient:
    /// every send is checked and queued first, then all are awaited, so the shards
    /// commit them in batches (one append per conversation).
    pub async fn notify(&self, n: Notify) -> Result<Notified, ApiError> {
        if n.user_ids.len() > MAX_NOTIFY {
            return Err(ApiError::invalid(
                "at most 10000 recipients per notification",
            ));
        }
        self.validate_text(&n.text)?;
        self.require_user(n.from).await?;
        let id = n.notification_id.unwrap_or_else(crate::api::system_msg_id);
        check_id("notification_id", &id, 64)?;
        let mut refused = Vec::new();
        let mut queued = Vec::with_capacity(n.user_ids.len());
        for &user in &n.user_ids {
            let submitted = match ConversationId::direct(n.from, user) {
                Some(c) => {
                    let view = SendView::from(pb::Send {
                        client_msg_id: format!("n-{id}-{user}"),
                        conversation: c.to_string(),
                        body: Some(pb::MessageBody::text(n.text.clone())),
                        reply_to_seq: 0,
                    });
                    self.submit_send(n.from, ADMIN_DEVICE, view).await
                }
                None => Err(ApiError::invalid("a notification to its own sender")),
            };
            match submitted {
                Ok(ack) => queued.push((user, ack)),
                Err(e) => refused.push(NotifyRefusal {
                    user_id: user,
                    error: error_body(&e),
                }),
            }
        }
        let mut sent = 0;
        for (user, ack) in queued {
            match ack.await {
                Ok(_) => sent += 1,
                Err(e) => refused.push(NotifyRefusal {
                    user_id: user,
                    error: error_body(&e),
                }),
            }
        }
        Ok(Notified { sent, refused })
    }

    /// Erases `user`'s data on request: its sessions end and its tokens and devices
    /// go; every message it sent becomes a tombstone (the content erased, a recall
    /// event by the system in its conversation, as a recall does); every relation
    /// it has goes. The account stays (its name taken; ban it to keep it out).
    /// Retrying after a failure finishes the job.
    pub async fn erase_user(&self, user: u64) -> Result<Erased, ApiError> {
        self.require_user(user).await?;
        self.store.revoke_user_tokens(user, None).await?;
        self.registry.close_user(user, ErrorCode::LoggedOut);
        let mut devices = 0;
        for d in self.store.devices(user).await? {
            if self
                .store
                .remove_device(user, &d.device_id)
                .await?
                .is_some()
            {
                devices += 1;
            }
        }
        let conversations = self.store.conversations(user).await?;
        let mut messages = 0;
        for entry in &conversations {
            messages += self.erase_messages(user, &entry.conversation).await?;
        }
        let relations = self.erase_relations(user).await?;
        Ok(Erased {
            messages,
            conversations: conversations.len() as u64,
            relations,
            devices,
        })
    }

    /// Tombstones every message `user` sent in `c`; how many.
    async fn erase_messages(&self, user: u64, c: &ConversationId) -> Result<u64, ApiError> {
        use courier_storage::HistoryRange;
        let mut cursor = 0;
        let mut erased = 0;
        loop {
            let mut pending = Vec::new();
            let page = self
                .store
                .history(c, HistoryRange::After(cursor), 500)
                .await?;
            for m in &page.messages {
                cursor = m.seq;
                if m.sender != user || m.recalled.is_some() {
                    continue;
                }
                let body = pb::MessageBody::decode(m.body.clone()).unwrap_or_default();
                if matches!(body.content, Some(pb::message_body::Content::System(_))) {
                    continue;
                }
                let event = pb::MessageBody {
                    content: Some(pb::message_body::Content::System(pb::SystemEvent {
                        event: Some(pb::system_event::Event::MessageRecalled(
                            pb::MessageRecalled {
                                seq: m.seq,
                                by_user: 0,
                            },
                        )),
                    })),
                };
                pending.push(
                    self.submit_append(AppendRequest {
                        conversation: *c,
                        sender: 0,
                        sender_device: ADMIN_DEVICE.into(),
                        // The same id on a retry: stored once.
                        client_msg_id: format!("erase-{user}-{}", m.seq),
                        body: event.encode_to_vec().into(),
                        reply_to_seq: m.seq,
                        recalls: m.seq,
                        mentions: Vec::new(),
                        edits: None,
                    })
                    .await?,
                );
            }
            // A page's tombstones are committed together before the next is read.
            erased += pending.len() as u64;
            for appended in pending {
                appended.await?;
            }
            if !page.has_more || page.messages.is_empty() {
                break;
            }
        }
        Ok(erased)
    }

    /// Removes every relation `user` has, both ways; how many.
    async fn erase_relations(&self, user: u64) -> Result<u64, ApiError> {
        use courier_storage::{RelationChange, RelationSet};
        let mut removed = 0;
        for (set, change) in [
            (RelationSet::Friends, RelationChange::Unfriend),
            (RelationSet::RequestsReceived, RelationChange::Decline),
            (RelationSet::RequestsSent, RelationChange::Cancel),
            (RelationSet::Following, RelationChange::Follow(false)),
            (RelationSet::Followers, RelationChange::Follow(false)),
            (RelationSet::Blocking, RelationChange::Block(false)),
        ] {
            let mut after = 0;
            loop {
                let peers = self.store.relations(user, after, 500, set).await?;
                if peers.is_empty() {
                    break;
                }
                for (peer, _) in peers {
                    after = peer;
                    // A follower's follow is the follower's to undo.
                    let (by, toward) = match set {
                        RelationSet::Followers => (peer, user),
                        _ => (user, peer),
                    };
                    match self.store.change_relation(by, toward, change).await? {
                        Ok(_) => removed += 1,
                        Err(refusal) => {
                            return Err(ApiError::internal(format!(
                                "erasing relation {by} -> {toward}: {refusal:?}"
                            )))
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Connected devices: all, and per asked user.
    pub fn online(&self, users: &[u64]) -> Online {
        Online {
            devices_online: self.registry.online_devices(),
            users: users
                .iter()
                .map(|&u| UserOnline {
                    user_id: u,
                    devices: self.registry.devices_of(u) as u64,
                })
                .collect(),
        }
    }
}
