//! The HTTP side of the SDK: accounts, relations, groups, conversations, history.

use courier_protocol::ConversationId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Result, SdkError};
use crate::types::{
    AddedMembers, ConversationList, FriendRequests, Group, Media, Member, MemberList, NewGroup,
    Relation, RelationList,
};

/// A client of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// The name shown for the user, if set.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A short status line.
    #[serde(default)]
    pub status: Option<String>,
    /// The user's picture: `{sha256, url}`.
    #[serde(default)]
    pub avatar: Option<Value>,
    /// The application's own fields: `{name: value}`.
    #[serde(default)]
    pub custom: Option<Value>,
    /// Whether search finds the user (in the user's own view only).
    #[serde(default)]
    pub discoverable: Option<bool>,
}

/// The answer to a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginInfo {
    /// Bearer token for the HTTP API and the binary protocol's Hello.
    pub token: String,
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// When the token expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

/// One message as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// Conversation id.
    pub conversation: String,
    /// Seq in the conversation.
    pub seq: u64,
    /// Sender's user id.
    pub from: u64,
    /// Sender's device.
    #[serde(default)]
    pub from_device: String,
    /// The sender's idempotency key.
    #[serde(default)]
    pub client_msg_id: String,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The text, for text messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body as JSON (`{"type": "text", ...}`).
    #[serde(default)]
    pub body: Value,
    /// Set when the message was recalled (or erased): `{"by_user", "at_ms"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled: Option<Value>,
    /// Set when the message was edited (`text` and `body` are then the latest):
    /// `{"by_user", "at_ms", "count", "event_seq"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<Value>,
    /// Reactions, counted per emoji: `[{"emoji", "count", "mine"}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Value>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Conversation id.
    pub conversation: String,
    /// Messages in ascending seq order.
    pub messages: Vec<HistoryMessage>,
    /// More messages lie beyond this page.
    pub has_more: bool,
    /// The oldest seq the server still serves (its retention depth).
    #[serde(default)]
    pub retained_from_seq: u64,
}

/// Which page of history to fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages below this seq.
    pub before: Option<u64>,
    /// Messages above this seq.
    pub after: Option<u64>,
    /// Page size (server default 20, capped by the server).
    pub limit: Option<usize>,
}

impl HttpClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:7180`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same client, authenticating with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Creates an account.
    pub async fn register(&self, name: &str, password: &str) -> Result<UserInfo> {
        let body = serde_json::json!({"name": name, "password": password});
        self.call(self.http.post(self.url("/v1/register")).json(&body))
            .await
    }

    /// Logs in and returns a token.
    pub async fn login(&self, name: &str, password: &str) -> Result<LoginInfo> {
        let body = serde_json::json!({"name": name, "password": password});
        self.call(self.http.post(self.url("/v1/login")).json(&body))
            .await
    }

    /// Revokes this client's token; the sessions it opened end with `LOGGED_OUT`.
    pub async fn logout(&self) -> Result<()> {
        self.call_empty(self.http.post(self.url("/v1/logout")))
            .await
    }

    /// Revokes every token of the user and ends all its sessions; returns how many
    /// tokens were revoked.
    pub async fn logout_everywhere(&self) -> Result<u64> {
        let v: Value = self
            .call(self.http.post(self.url("/v1/logout/all")))
            .await?;
        Ok(v["revoked_tokens"].as_u64().unwrap_or(0))
    }

    /// Changes the password; every other token of the user is revoked (this one
    /// stays valid).
    pub async fn change_password(&self, current: &str, new: &str) -> Result<()> {
        let body = serde_json::json!({"current_password": current, "new_password": new});
        self.call_empty(self.http.post(self.url("/v1/password")).json(&body))
            .await
    }

    /// The account the token belongs to.
    pub async fn me(&self) -> Result<UserInfo> {
        self.call(self.http.get(self.url("/v1/me"))).await
    }

    /// Looks a user up by name.
    pub async fn user(&self, name: &str) -> Result<UserInfo> {
        self.call(self.http.get(self.url(&format!("/v1/users/{name}"))))
            .await
    }

    /// A page of a conversation's history.
    pub async fn history(
        &self,
        conversation: &ConversationId,
        q: HistoryQuery,
    ) -> Result<HistoryPage> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/conversations/{conversation}/messages")));
        let mut params = Vec::new();
        if let Some(b) = q.before {
            params.push(("before", b.to_string()));
        }
        if let Some(a) = q.after {
            params.push(("after", a.to_string()));
        }
        if let Some(l) = q.limit {
            params.push(("limit", l.to_string()));
        }
        if !params.is_empty() {
            req = req.query(&params);
        }
        self.call(req).await
    }

    /// Every message of a conversation after `after`, paging forward.
    pub async fn history_all(
        &self,
        conversation: &ConversationId,
        after: u64,
    ) -> Result<Vec<HistoryMessage>> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .history(
                    conversation,
                    HistoryQuery {
                        after: Some(cursor),
                        limit: Some(100),
                        ..HistoryQuery::default()
                    },
                )
                .await?;
            let Some(last) = page.messages.last() else {
                break;
            };
            cursor = last.seq;
            out.extend(page.messages);
            if !page.has_more {
                break;
            }
        }
        Ok(out)
    }

    /// A page of the caller's conversation list (pinned first, then by activity).
    pub async fn conversations(
        &self,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ConversationList> {
        let mut params = Vec::new();
        if let Some(c) = cursor {
            params.push(("cursor", c.to_owned()));
        }
        if let Some(l) = limit {
            params.push(("limit", l.to_string()));
        }
        self.call(self.http.get(self.url("/v1/conversations")).query(&params))
            .await
    }

    /// Mutes/unmutes or pins/unpins a conversation.
    pub async fn set_conversation_flags(
        &self,
        c: &ConversationId,
        muted: Option<bool>,
        pinned: Option<bool>,
    ) -> Result<()> {
        let body = serde_json::json!({"muted": muted, "pinned": pinned});
        self.call_empty(
            self.http
                .patch(self.url(&format!("/v1/conversations/{c}")))
                .json(&body),
        )
        .await
    }

    /// How the caller relates to `user_id`.
    pub async fn relation(&self, user_id: u64) -> Result<Relation> {
        self.call(self.http.get(self.url(&format!("/v1/relations/{user_id}"))))
            .await
    }

    /// A page of the caller's friends.
    pub async fn friends(&self, after: Option<u64>) -> Result<RelationList> {
        self.list("/v1/friends", after).await
    }

    /// Users the caller follows.
    pub async fn following(&self, after: Option<u64>) -> Result<RelationList> {
        self.list("/v1/following", after).await
    }

    /// Users following the caller.
    pub async fn followers(&self, after: Option<u64>) -> Result<RelationList> {
        self.list("/v1/followers", after).await
    }

    /// Users the caller blocks.
    pub async fn blocks(&self, after: Option<u64>) -> Result<RelationList> {
        self.list("/v1/blocks", after).await
    }

    async fn list(&self, path: &str, after: Option<u64>) -> Result<RelationList> {
        let params: Vec<(&str, String)> = after
            .map(|a| ("after", a.to_string()))
            .into_iter()
            .collect();
        self.call(self.http.get(self.url(path)).query(&params))
            .await
    }

    /// Pending friend requests both ways.
    pub async fn friend_requests(&self) -> Result<FriendRequests> {
        self.call(self.http.get(self.url("/v1/friends/requests")))
            .await
    }

    /// Asks `user_id` to be friends.
    pub async fn request_friend(&self, user_id: u64) -> Result<Relation> {
        let body = serde_json::json!({"user_id": user_id});
        self.call(self.http.post(self.url("/v1/friends/requests")).json(&body))
            .await
    }

    /// Accepts `user_id`'s request.
    pub async fn accept_friend(&self, user_id: u64) -> Result<Relation> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/friends/requests/{user_id}/accept"))),
        )
        .await
    }

    /// Declines `user_id`'s request.
    pub async fn decline_friend(&self, user_id: u64) -> Result<Relation> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/friends/requests/{user_id}/decline"))),
        )
        .await
    }

    /// Withdraws the caller's request to `user_id`.
    pub async fn cancel_friend_request(&self, user_id: u64) -> Result<Relation> {
        self.call(
            self.http
                .delete(self.url(&format!("/v1/friends/requests/{user_id}"))),
        )
        .await
    }

    /// Ends the friendship with `user_id`.
    pub async fn remove_friend(&self, user_id: u64) -> Result<Relation> {
        self.call(
            self.http
                .delete(self.url(&format!("/v1/friends/{user_id}"))),
        )
        .await
    }

    /// Follows or unfollows `user_id`.
    pub async fn set_follow(&self, user_id: u64, on: bool) -> Result<Relation> {
        let url = self.url(&format!("/v1/following/{user_id}"));
        self.call(if on {
            self.http.put(url)
        } else {
            self.http.delete(url)
        })
        .await
    }

    /// Blocks or unblocks `user_id`.
    pub async fn set_block(&self, user_id: u64, on: bool) -> Result<Relation> {
        let url = self.url(&format!("/v1/blocks/{user_id}"));
        self.call(if on {
            self.http.put(url)
        } else {
            self.http.delete(url)
        })
        .await
    }

    /// Creates a group owned by the caller.
    pub async fn create_group(&self, group: &NewGroup) -> Result<Group> {
        self.call(self.http.post(self.url("/v1/groups")).json(group))
            .await
    }

    /// The caller's groups.
    pub async fn groups(&self) -> Result<Vec<Group>> {
        #[derive(Deserialize)]
        struct List {
            groups: Vec<Group>,
        }
        let list: List = self.call(self.http.get(self.url("/v1/groups"))).await?;
        Ok(list.groups)
    }

    /// A group's info.
    pub async fn group(&self, group_id: u64) -> Result<Group> {
        self.call(self.http.get(self.url(&format!("/v1/groups/{group_id}"))))
            .await
    }

    /// Renames a group or changes its settings.
    pub async fn update_group(
        &self,
        group_id: u64,
        name: Option<&str>,
        join_policy: Option<&str>,
        history_visible: Option<bool>,
    ) -> Result<Group> {
        let body = serde_json::json!({"name": name, "join_policy": join_policy, "history_visible": history_visible});
        self.call(
            self.http
                .patch(self.url(&format!("/v1/groups/{group_id}")))
                .json(&body),
        )
        .await
    }

    /// A page of a group's members.
    pub async fn members(
        &self,
        group_id: u64,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<MemberList> {
        let mut params = Vec::new();
        if let Some(a) = after {
            params.push(("after", a.to_string()));
        }
        if let Some(l) = limit {
            params.push(("limit", l.to_string()));
        }
        self.call(
            self.http
                .get(self.url(&format!("/v1/groups/{group_id}/members")))
                .query(&params),
        )
        .await
    }

    /// Adds users to a group.
    pub async fn add_members(&self, group_id: u64, user_ids: &[u64]) -> Result<AddedMembers> {
        let body = serde_json::json!({"user_ids": user_ids});
        self.call(
            self.http
                .post(self.url(&format!("/v1/groups/{group_id}/members")))
                .json(&body),
        )
        .await
    }

    /// Pending invitations to groups (`{invitations: [{group_id, name, inviter, ...}]}`).
    pub async fn invitations(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/v1/invitations"))).await
    }

    /// Accepts an invitation: joins the group.
    pub async fn accept_invitation(&self, group_id: u64) -> Result<Group> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/invitations/{group_id}/accept"))),
        )
        .await
    }

    /// Declines an invitation.
    pub async fn decline_invitation(&self, group_id: u64) -> Result<()> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/invitations/{group_id}"))),
        )
        .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, group_id: u64, user_id: u64) -> Result<()> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/groups/{group_id}/members/{user_id}"))),
        )
        .await
    }

    /// Sets a member's role (`admin` or `member`).
    pub async fn set_role(&self, group_id: u64, user_id: u64, role: &str) -> Result<Member> {
        let body = serde_json::json!({"role": role});
        let url = self.url(&format!("/v1/groups/{group_id}/members/{user_id}/role"));
        self.call(self.http.put(url).json(&body)).await
    }

    /// Joins an open group.
    pub async fn join_group(&self, group_id: u64) -> Result<Group> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/groups/{group_id}/join"))),
        )
        .await
    }

    /// Leaves a group.
    pub async fn leave_group(&self, group_id: u64) -> Result<()> {
        self.call_empty(
            self.http
                .post(self.url(&format!("/v1/groups/{group_id}/leave"))),
        )
        .await
    }

    /// Hands a group's ownership to `user_id`.
    pub async fn transfer_group(&self, group_id: u64, user_id: u64) -> Result<Group> {
        let body = serde_json::json!({"user_id": user_id});
        self.call(
            self.http
                .post(self.url(&format!("/v1/groups/{group_id}/transfer")))
                .json(&body),
        )
        .await
    }

    /// Who has read message `seq` (count, and readers where the server lists them).
    pub async fn reads(&self, c: &ConversationId, seq: u64) -> Result<Value> {
        let url = self.url(&format!("/v1/conversations/{c}/messages/{seq}/reads"));
        self.call(self.http.get(url)).await
    }

    /// Recalls message `seq`; returns the seq of the recall event.
    pub async fn recall(&self, c: &ConversationId, seq: u64) -> Result<u64> {
        let url = self.url(&format!("/v1/conversations/{c}/messages/{seq}/recall"));
        let v: Value = self.call(self.http.post(url)).await?;
        v["event_seq"]
            .as_u64()
            .ok_or_else(|| SdkError::Unexpected("no event_seq in the answer".into()))
    }

    /// Replaces the text of one's own text message `seq`; returns the seq of the
    /// edit event.
    pub async fn edit(&self, c: &ConversationId, seq: u64, text: &str) -> Result<u64> {
        let url = self.url(&format!("/v1/conversations/{c}/messages/{seq}"));
        let v: Value = self
            .call(
                self.http
                    .patch(url)
                    .json(&serde_json::json!({ "text": text })),
            )
            .await?;
        v["event_seq"]
            .as_u64()
            .ok_or_else(|| SdkError::Unexpected("no event_seq in the answer".into()))
    }

    /// Reacts to message `seq` with `emoji` (`add` false: takes it back); returns
    /// `{conversation, seq, emoji, changed, event_seq}`.
    pub async fn react(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        add: bool,
    ) -> Result<Value> {
        let url = self.url(&format!(
            "/v1/conversations/{c}/messages/{seq}/reactions/{}",
            percent_encode(emoji)
        ));
        let req = if add {
            self.http.put(url)
        } else {
            self.http.delete(url)
        };
        self.call(req).await
    }

    /// Who reacted to message `seq` with `emoji`: `{users: [{user_id, at_ms}],
    /// next_after}`, user ids above `after`.
    pub async fn reactors(
        &self,
        c: &ConversationId,
        seq: u64,
        emoji: &str,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Value> {
        let url = self.url(&format!("/v1/conversations/{c}/messages/{seq}/reactions"));
        let mut query = vec![("emoji", emoji.to_owned())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.call(self.http.get(url).query(&query)).await
    }

    /// Deletes messages `seqs` for the caller alone and/or clears its history
    /// through `clear_through` (0: no); returns `{conversation, seqs, cleared_seq,
    /// view_version}`.
    pub async fn hide(
        &self,
        c: &ConversationId,
        seqs: &[u64],
        clear_through: u64,
    ) -> Result<Value> {
        let url = self.url(&format!("/v1/conversations/{c}/hide"));
        let body = serde_json::json!({"seqs": seqs, "clear_through": clear_through});
        self.call(self.http.post(url).json(&body)).await
    }

    /// Deletes the conversation from the caller's list (until the next message).
    pub async fn delete_conversation(&self, c: &ConversationId) -> Result<Value> {
        let url = self.url(&format!("/v1/conversations/{c}"));
        self.call(self.http.delete(url)).await
    }

    /// Sets a group's description and/or picture (the SHA-256 of an image the
    /// caller uploaded; empty removes it).
    pub async fn set_group_profile(
        &self,
        group_id: u64,
        description: Option<&str>,
        avatar: Option<&str>,
    ) -> Result<Group> {
        let body = serde_json::json!({"description": description, "avatar": avatar});
        let url = self.url(&format!("/v1/groups/{group_id}"));
        self.call(self.http.patch(url).json(&body)).await
    }

    /// Dismisses a group (its owner only): read-only from then on.
    pub async fn dismiss_group(&self, group_id: u64) -> Result<Group> {
        let url = self.url(&format!("/v1/groups/{group_id}"));
        self.call(self.http.delete(url)).await
    }

    /// Pins `text` as a group's announcement (empty takes it down).
    pub async fn set_announcement(&self, group_id: u64, text: &str) -> Result<Group> {
        let url = self.url(&format!("/v1/groups/{group_id}/announcement"));
        self.call(
            self.http
                .put(url)
                .json(&serde_json::json!({ "text": text })),
        )
        .await
    }

    /// Mutes (or unmutes) a group: only its owner and admins may send.
    pub async fn mute_group(&self, group: u64, muted: bool) -> Result<Value> {
        let url = self.url(&format!("/v1/groups/{group}/mute"));
        self.call(
            self.http
                .put(url)
                .json(&serde_json::json!({ "muted": muted })),
        )
        .await
    }

    /// Mutes a member of a group for `duration_ms` (0 unmutes).
    pub async fn mute_member(&self, group: u64, user: u64, duration_ms: u64) -> Result<Value> {
        let url = self.url(&format!("/v1/groups/{group}/members/{user}/mute"));
        let body = serde_json::json!({ "duration_ms": duration_ms });
        self.call(self.http.put(url).json(&body)).await
    }

    /// Asks to join a group that approves its members, with a message for its
    /// owner and admins (JSON: the pending request, `{group_id, user_id, name,
    /// message, created_ms}`). An open group is joined at once (JSON: the group).
    pub async fn request_to_join(&self, group: u64, message: &str) -> Result<Value> {
        let url = self.url(&format!("/v1/groups/{group}/join"));
        let body = serde_json::json!({ "message": message });
        self.call(self.http.post(url).json(&body)).await
    }

    /// Takes back the caller's request to join a group.
    pub async fn cancel_join_request(&self, group: u64) -> Result<()> {
        let url = self.url(&format!("/v1/groups/{group}/join"));
        self.call_empty(self.http.delete(url)).await
    }

    /// A page of a group's pending join requests (owner and admins; JSON:
    /// `{requests: [{user_id, name, message, created_ms}], next_after}`).
    pub async fn join_requests(&self, group: u64, after: u64, limit: usize) -> Result<Value> {
        let url = self.url(&format!(
            "/v1/groups/{group}/join-requests?after={after}&limit={limit}"
        ));
        self.call(self.http.get(url)).await
    }

    /// Approves a join request: the user joins (JSON: the new member).
    pub async fn approve_join(&self, group: u64, user: u64) -> Result<Value> {
        let url = self.url(&format!("/v1/groups/{group}/join-requests/{user}/approve"));
        self.call(self.http.post(url)).await
    }

    /// Declines a join request.
    pub async fn decline_join(&self, group: u64, user: u64) -> Result<()> {
        let url = self.url(&format!("/v1/groups/{group}/join-requests/{user}"));
        self.call_empty(self.http.delete(url)).await
    }

    /// Bans a user from a group (removing it if it is a member), or lifts the ban.
    pub async fn ban(&self, group: u64, user: u64, banned: bool) -> Result<()> {
        let url = self.url(&format!("/v1/groups/{group}/bans/{user}"));
        self.call_empty(match banned {
            true => self.http.put(url),
            false => self.http.delete(url),
        })
        .await
    }

    /// A page of a group's bans (owner and admins; JSON: `{bans: [{user_id, name,
    /// by_user, at_ms}], next_after}`).
    pub async fn bans(&self, group: u64, after: u64, limit: usize) -> Result<Value> {
        let url = self.url(&format!(
            "/v1/groups/{group}/bans?after={after}&limit={limit}"
        ));
        self.call(self.http.get(url)).await
    }

    /// The caller's bound devices (JSON: `{devices: [{device_id, platform, online, ...}]}`).
    pub async fn devices(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/v1/devices"))).await
    }

    /// Unbinds a device and ends its session.
    pub async fn remove_device(&self, device_id: &str) -> Result<()> {
        let url = self.url(&format!("/v1/devices/{device_id}"));
        self.call_empty(self.http.delete(url)).await
    }

    /// Changes the caller's profile: `change` is a JSON object with any of
    /// `display_name`, `status`, `avatar`, `custom` and `discoverable` (those left
    /// out stay as they are); returns the account.
    pub async fn update_profile(&self, change: &Value) -> Result<UserInfo> {
        self.call(self.http.patch(self.url("/v1/me")).json(change))
            .await
    }

    /// Users found by exact name or display-name prefix: `{users, next_cursor}`.
    pub async fn search_users(
        &self,
        q: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Value> {
        let mut query = vec![("q", q.to_owned())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.call(self.http.get(self.url("/v1/search/users")).query(&query))
            .await
    }

    /// Sets (or with `None` clears) the user's display name; returns the account.
    pub async fn set_display_name(&self, name: Option<&str>) -> Result<UserInfo> {
        let body = json!({ "display_name": name });
        self.call(self.http.patch(self.url("/v1/me")).json(&body))
            .await
    }

    /// Registers the push token of one of the user's devices: `provider` is `apns`
    /// or `fcm`, `app_id` the bundle id (APNs) or Firebase project id (FCM). Pushes
    /// reach the device while it is offline, until the token is removed or this
    /// client's token is logged out.
    pub async fn set_push_token(
        &self,
        device_id: &str,
        provider: &str,
        token: &str,
        app_id: &str,
        sandbox: bool,
    ) -> Result<()> {
        let url = self.url(&format!("/v1/devices/{device_id}/push"));
        let body = serde_json::json!({
            "provider": provider,
            "token": token,
            "app_id": app_id,
            "sandbox": sandbox,
        });
        self.call::<Value>(self.http.put(url).json(&body))
            .await
            .map(drop)
    }

    /// Removes the push token of one of the user's devices.
    pub async fn remove_push_token(&self, device_id: &str) -> Result<()> {
        let url = self.url(&format!("/v1/devices/{device_id}/push"));
        self.call_empty(self.http.delete(url)).await
    }

    /// Presence of `users` (JSON: `{users: [{user_id, online}]}`).
    pub async fn presence(&self, users: &[u64]) -> Result<Value> {
        let list: Vec<String> = users.iter().map(u64::to_string).collect();
        let req = self.http.get(self.url("/v1/presence"));
        self.call(req.query(&[("users", list.join(","))])).await
    }

    /// The Prometheus metrics text (an operator route: needs the admin token, or a
    /// client of the admin listener).
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .send(self.http.get(self.url("/metrics")))
            .await?
            .text()
            .await?)
    }

    /// Presence and receipt counters (an operator route: needs the admin token).
    pub async fn stats(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/v1/stats"))).await
    }

    /// A fresh signed link to blob `id`: one the caller uploaded, or (with
    /// `message`) one carried by that message of a conversation the caller reads.
    pub async fn media_url(
        &self,
        id: &str,
        message: Option<(&ConversationId, u64)>,
    ) -> Result<Media> {
        let mut req = self.http.post(self.url(&format!("/v1/media/{id}/url")));
        if let Some((c, seq)) = message {
            req = req.query(&[("conversation", c.to_string()), ("seq", seq.to_string())]);
        }
        self.call(req).await
    }

    /// Uploads a file's bytes (streamed from `path`); the server sniffs the type.
    pub async fn upload_file(&self, path: impl AsRef<std::path::Path>) -> Result<Media> {
        let file = tokio::fs::File::open(path).await?;
        let stream = tokio_util::io::ReaderStream::new(file);
        let body = reqwest::Body::wrap_stream(stream);
        self.call(self.http.post(self.url("/v1/media")).body(body))
            .await
    }

    /// Uploads bytes held in memory.
    pub async fn upload_bytes(&self, bytes: Vec<u8>) -> Result<Media> {
        self.call(self.http.post(self.url("/v1/media")).body(bytes))
            .await
    }

    /// Downloads from a signed path (as in [`Media::url`]), optionally a byte range
    /// (`Range: bytes=a-b`). Returns the status and the bytes.
    pub async fn download(
        &self,
        signed_path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = self.http.get(self.url(signed_path));
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{b}"));
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok((status, resp.bytes().await?.to_vec()));
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(SdkError::Http {
            status,
            code: body["code"].as_i64().unwrap_or(0) as i32,
            name: body["name"].as_str().unwrap_or("unknown").to_owned(),
            message: body["message"].as_str().unwrap_or("").to_owned(),
        })
    }

    /// The server's OpenAPI document.
    pub async fn openapi(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/v1/openapi.json"))).await
    }

    /// Moves the read cursor of a conversation forward; returns the cursor in force.
    pub async fn mark_read(&self, conversation: &ConversationId, seq: u64) -> Result<u64> {
        let body = serde_json::json!({"seq": seq});
        let v: Value = self
            .call(
                self.http
                    .post(self.url(&format!("/v1/conversations/{conversation}/read")))
                    .json(&body),
            )
            .await?;
        v["read_seq"]
            .as_u64()
            .ok_or_else(|| SdkError::Unexpected("no read_seq in the answer".into()))
    }

    // The admin API (`/v1/admin`): a client built `with_token(<admin token>)`, or
    // one pointed at the operator listener.

    /// Creates users that do not exist yet: `(name, Some(password))` a password
    /// account, `(name, None)` one the application vouches for. Per user: `user_id`
    /// and `created`, or `error`.
    pub async fn admin_import_users(&self, users: &[(&str, Option<&str>)]) -> Result<Value> {
        let users: Vec<Value> = users
            .iter()
            .map(|(name, password)| json!({"name": name, "password": password}))
            .collect();
        let req = self.http.post(self.url("/v1/admin/users"));
        self.call(req.json(&json!({ "users": users }))).await
    }

    /// A token for `user_id`, as a login gives it.
    pub async fn admin_mint_token(&self, user_id: u64) -> Result<LoginInfo> {
        let url = self.url(&format!("/v1/admin/users/{user_id}/tokens"));
        self.call(self.http.post(url)).await
    }

    /// Revokes every token of `user_id` and ends its sessions; how many were revoked.
    pub async fn admin_logout(&self, user_id: u64) -> Result<u64> {
        let url = self.url(&format!("/v1/admin/users/{user_id}/logout"));
        let v: Value = self.call(self.http.post(url)).await?;
        Ok(v["revoked"].as_u64().unwrap_or(0))
    }

    /// Removes one device of `user_id` (its session ends, its tokens are revoked).
    pub async fn admin_remove_device(&self, user_id: u64, device_id: &str) -> Result<()> {
        let url = self.url(&format!("/v1/admin/users/{user_id}/devices/{device_id}"));
        self.call_empty(self.http.delete(url)).await
    }

    /// Bans (`true`) or unbans `user_id`.
    pub async fn admin_ban(&self, user_id: u64, banned: bool) -> Result<()> {
        let url = self.url(&format!("/v1/admin/users/{user_id}/ban"));
        let req = match banned {
            true => self.http.post(url),
            false => self.http.delete(url),
        };
        self.call_empty(req).await
    }

    /// Sends `text` into `conversation` as `from`, or as the system (`None`).
    pub async fn admin_send(
        &self,
        conversation: &ConversationId,
        from: Option<u64>,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Value> {
        let body = json!({
            "conversation": conversation.to_string(), "from": from, "text": text,
            "client_msg_id": client_msg_id,
        });
        self.call(self.http.post(self.url("/v1/admin/messages")).json(&body))
            .await
    }

    /// Sends `text` from `from` to each of `users` in their direct conversations.
    pub async fn admin_notify(
        &self,
        from: u64,
        users: &[u64],
        text: &str,
        notification_id: Option<&str>,
    ) -> Result<Value> {
        let body = json!({
            "from": from, "user_ids": users, "text": text, "notification_id": notification_id,
        });
        self.call(
            self.http
                .post(self.url("/v1/admin/notifications"))
                .json(&body),
        )
        .await
    }

    /// Devices online now, in all and per user of `users`.
    pub async fn admin_online(&self, users: &[u64]) -> Result<Value> {
        let list: Vec<String> = users.iter().map(u64::to_string).collect();
        let url = self.url(&format!("/v1/admin/online?users={}", list.join(",")));
        self.call(self.http.get(url)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        Ok(self.send(req).await?.json().await?)
    }

    async fn call_empty(&self, req: reqwest::RequestBuilder) -> Result<()> {
        self.send(req).await.map(drop)
    }

    /// Sends with the token; a non-2xx answer becomes [`SdkError::Http`].
    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(SdkError::Http {
            status: status.as_u16(),
            code: body["code"].as_i64().unwrap_or(0) as i32,
            name: body["name"].as_str().unwrap_or("unknown").to_owned(),
            message: body["message"].as_str().unwrap_or("").to_owned(),
        })
    }
}

/// `s` as one percent-encoded path segment.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
