//! The JSON shapes of the HTTP API. Each derives `ToSchema`, so the OpenAPI document
//! is generated from the same types the handlers return.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// An error answer: `{code, name, message}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable numeric code (the protocol's `ErrorCode`).
    pub code: i32,
    /// The code's short name, e.g. `bad_token`.
    pub name: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Name and password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    /// 1 to 32 characters of `a-z 0-9 _ - .`.
    pub name: String,
    /// At least 8 bytes.
    pub password: String,
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordChange {
    /// The password in use now.
    pub current_password: String,
    /// The new password (at least 8 bytes).
    pub new_password: String,
}

/// What "log out everywhere" did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoggedOut {
    /// Tokens revoked.
    pub revoked_tokens: usize,
}

/// A user's public basics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// The name shown for the user, if set (by the user, or by the application's
    /// token).
    pub display_name: Option<String>,
    /// A short status line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The user's picture: `{sha256, url}` (a signed link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub avatar: Option<Value>,
    /// The application's own fields: `{name: value}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
    /// Whether search finds the user (shown to the user itself only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discoverable: Option<bool>,
}

/// A page of users found by a search.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserSearchPage {
    /// The users: one named exactly so first, then display-name matches.
    pub users: Vec<UserInfo>,
    /// Pass as `cursor` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A user search.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UserSearchQuery {
    /// An exact user name, or the start of a display name (at least 2 characters).
    pub q: String,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (1..=50, default 20).
    pub limit: Option<usize>,
}

/// A change to the caller's profile; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct ProfileChange {
    /// A new display name (`Some(None)` clears it).
    pub display_name: Option<Option<String>>,
    /// A new status line (empty clears it).
    pub status: Option<String>,
    /// The SHA-256 of an image the user uploaded (empty clears it).
    pub avatar: Option<String>,
    /// The application's fields, replacing all of them.
    pub custom: Option<std::collections::BTreeMap<String, String>>,
    /// Whether search finds the user.
    pub discoverable: Option<bool>,
}

/// A change to the caller's account and profile; fields left out stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateMe {
    /// The name shown for the caller (1 to 64 bytes, no control characters); `null`
    /// clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub display_name: Option<Option<String>>,
    /// A short status line (at most 140 bytes; empty clears it).
    pub status: Option<String>,
    /// The SHA-256 of an image the caller uploaded (empty clears it).
    pub avatar: Option<String>,
    /// The application's fields (at most 16; names of `[A-Za-z0-9_.-]`, values up
    /// to 256 bytes), replacing all of them.
    #[schema(value_type = Option<Object>)]
    pub custom: Option<std::collections::BTreeMap<String, String>>,
    /// Whether search finds the caller.
    pub discoverable: Option<bool>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// The answer to a login.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginInfo {
    /// Bearer token for the HTTP API and the binary protocol.
    pub token: String,
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// Token expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Liveness and gauges.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` while the store cannot write.
    pub status: String,
    /// `ok`, or `unavailable` while a shard's group commits fail (disk full, I/O errors).
    #[serde(default)]
    pub storage: String,
    /// Devices connected now.
    pub online_devices: u64,
    /// Appends waiting for the store.
    pub store_queued: usize,
    /// This node's view of its cluster, when it is one node of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
}

/// A node's view of its cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterHealth {
    /// This node's name.
    pub node: String,
    /// The NATS connection: `connected`, `disconnected` or `pending`.
    pub nats: String,
    /// Other nodes alive now.
    pub nodes: u64,
    /// Users with a device online on any node.
    pub users_online: usize,
}

/// One message of a history page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    /// Conversation id.
    pub conversation: String,
    /// Seq in the conversation.
    pub seq: u64,
    /// Sender's user id.
    pub from: u64,
    /// Sender's device.
    pub from_device: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The text, for text messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body: `{"type": "text" | "media" | "custom" | "system", ...}`.
    #[schema(value_type = Object)]
    pub body: Value,
    /// The seq this message replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to_seq: Option<u64>,
    /// Set when the message was recalled (its body is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recalled: Option<RecalledView>,
    /// Set when the message was edited (`body` and `text` are then the latest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited: Option<EditedView>,
    /// Reactions, counted per emoji.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
}

/// A group's pinned announcement.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnnouncementBody {
    /// The text (empty takes it down; at most 4096 bytes).
    pub text: String,
}

/// Mute or unmute a whole group.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteGroupBody {
    /// Muted (only the owner and admins may send) or not.
    pub muted: bool,
}

/// Mute a member for a time.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteMemberBody {
    /// For how long, in ms (0 unmutes; at most ten years).
    pub duration_ms: u64,
}

/// A change to the caller's own view of a conversation.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct HideBody {
    /// Messages to delete for the caller alone (at most 100).
    #[serde(default)]
    pub seqs: Vec<u64>,
    /// Clear the caller's history through this seq.
    #[serde(default)]
    pub clear_through: u64,
    /// Clear through the newest message: the conversation leaves the caller's list
    /// until the next message.
    #[serde(default)]
    pub delete_conversation: bool,
}

/// The caller's view of a conversation after a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HiddenView {
    /// Conversation id.
    pub conversation: String,
    /// The messages just deleted for the caller.
    pub seqs: Vec<u64>,
    /// Everything up to it is cleared for the caller.
    pub cleared_seq: u64,
    /// The caller's view version after the change (for sync).
    pub view_version: u64,
}

/// How many users reacted to a message with one emoji.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReactionView {
    /// The reaction.
    pub emoji: String,
    /// How many users reacted so.
    pub count: u64,
    /// The caller is among them.
    pub mine: bool,
}

/// The outcome of a reaction change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReactView {
    /// Conversation id.
    pub conversation: String,
    /// The message.
    pub seq: u64,
    /// The reaction.
    pub emoji: String,
    /// Whether anything changed (false: already there, or not there to remove).
    pub changed: bool,
    /// The seq of the event carrying the change (0 when nothing changed).
    pub event_seq: u64,
}

/// One user who reacted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReactorView {
    /// The user.
    pub user_id: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// A page of the users who reacted to a message with one emoji.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReactorPage {
    /// Ascending user id.
    pub users: Vec<ReactorView>,
    /// Pass as `after` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Paging of who reacted.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ReactorQuery {
    /// The reaction.
    pub emoji: String,
    /// Users with ids above this.
    pub after: Option<u64>,
    /// Page size (1..=500, default 100).
    pub limit: Option<usize>,
}

/// A page of history, ascending seq.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Conversation id.
    pub conversation: String,
    /// The messages, oldest first.
    pub messages: Vec<MessageView>,
    /// More messages lie beyond this page in the paging direction.
    pub has_more: bool,
    /// The oldest seq history still serves (retention depth); older pulls are empty.
    pub retained_from_seq: u64,
}

/// One entry of the conversation list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// Conversation id.
    pub conversation: String,
    /// `direct` or `group`.
    pub kind: String,
    /// The other user of a direct conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    /// The group of a group conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
    /// The group's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Newest seq.
    pub last_seq: u64,
    /// The caller's read cursor.
    pub read_seq: u64,
    /// Messages by others after the read cursor.
    pub unread: u64,
    /// Unread messages that mention the caller (by name or `@all`).
    pub mentions: u64,
    /// When the last message was stored (or the caller joined), ms since the epoch.
    pub last_activity_ms: u64,
    /// The newest message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessageView>,
    /// Notifications muted.
    pub muted: bool,
    /// Pinned to the top.
    pub pinned: bool,
}

/// A page of the conversation list: pinned first, then by last activity, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// The conversations.
    pub conversations: Vec<ConversationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A read report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReadBody {
    /// Everything up to this seq is read.
    pub seq: u64,
}

/// The read cursor in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadState {
    /// Conversation id.
    pub conversation: String,
    /// The cursor (never moves backward).
    pub read_seq: u64,
}

/// Conversation flags to change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConversationFlags {
    /// Mute notifications.
    pub muted: Option<bool>,
    /// Pin to the top of the list.
    pub pinned: Option<bool>,
}

/// How the caller relates to another user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RelationView {
    /// The other user.
    pub user_id: u64,
    /// The other user's name.
    pub name: String,
    /// Mutual friends.
    pub friend: bool,
    /// The caller asked; pending.
    pub request_sent: bool,
    /// The other user asked; pending.
    pub request_received: bool,
    /// The caller follows the other user.
    pub following: bool,
    /// The other user follows the caller.
    pub followed_by: bool,
    /// The caller blocks the other user.
    pub blocking: bool,
    /// When this last changed, ms since the epoch.
    pub since_ms: u64,
}

/// A list of relations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RelationList {
    /// The entries, by user id.
    pub users: Vec<RelationView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Pending friend requests, both ways.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FriendRequests {
    /// Requests to the caller.
    pub incoming: Vec<RelationView>,
    /// Requests by the caller.
    pub outgoing: Vec<RelationView>,
}

/// Whom a friend request is for.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FriendRequestBody {
    /// The user's id (or give `name`).
    pub user_id: Option<u64>,
    /// The user's name.
    pub name: Option<String>,
}

/// A new group.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroup {
    /// Display name.
    pub name: String,
    /// `open` (anyone may join by id) or `invite` (default).
    pub join_policy: Option<String>,
    /// Whether later members see earlier messages (default false).
    pub history_visible: Option<bool>,
    /// Users to add at once.
    #[serde(default)]
    pub members: Vec<u64>,
}

/// Group settings to change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateGroup {
    /// New name.
    pub name: Option<String>,
    /// `open` or `invite`.
    pub join_policy: Option<String>,
    /// Whether later members see earlier messages.
    pub history_visible: Option<bool>,
    /// What the group is about (empty clears it; at most 1024 bytes).
    pub description: Option<String>,
    /// The SHA-256 of an image the caller uploaded, as the group's picture (empty
    /// removes it).
    pub avatar: Option<String>,
}

/// A group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// Group id.
    pub group_id: u64,
    /// Its conversation id, `g:<id>`.
    pub conversation: String,
    /// Display name.
    pub name: String,
    /// Owner's user id.
    pub owner: u64,
    /// `open` or `invite`.
    pub join_policy: String,
    /// Whether later members see earlier messages.
    pub history_visible: bool,
    /// Members now.
    pub member_count: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Only the owner and admins may send.
    #[serde(default)]
    pub muted: bool,
    /// The owner dismissed the group: read-only from then on.
    #[serde(default)]
    pub dismissed: bool,
    /// What the group is about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The group's picture: `{sha256, url}` (a signed link), absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub avatar: Option<Value>,
    /// The pinned announcement: `{text, version, at_ms, by_user}`, absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub announcement: Option<Value>,
    /// The caller's role, if a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub my_role: Option<String>,
}

/// The caller's groups.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// The groups.
    pub groups: Vec<GroupView>,
}

/// A group member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// When the member joined, ms since the epoch.
    pub joined_ms: u64,
    /// The member may not send before this time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until_ms: Option<u64>,
}

/// A page of members, by user id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    /// The members.
    pub members: Vec<MemberView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// A user banned from a group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BanView {
    /// Who is banned.
    pub user_id: u64,
    /// Its user name.
    pub name: String,
    /// Who banned it.
    pub by_user: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// A page of a group's bans, by user id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BanList {
    /// The bans.
    pub bans: Vec<BanView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// A pending request to join a group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinRequestView {
    /// The group.
    pub group_id: u64,
    /// Who asks.
    pub user_id: u64,
    /// Its user name.
    pub name: String,
    /// What it says to the admins.
    pub message: String,
    /// When (ms since the Unix epoch).
    pub created_ms: u64,
}

/// A page of a group's pending join requests, by user id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JoinRequestList {
    /// The requests.
    pub requests: Vec<JoinRequestView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Joining a group, or asking to (a group that approves its members).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct JoinBody {
    /// What to tell the owner and admins (at most 512 bytes; requests only).
    #[serde(default)]
    pub message: String,
}

/// Users to add to a group.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMembers {
    /// User ids.
    pub user_ids: Vec<u64>,
}

/// The result of adding members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AddedMembers {
    /// Users added now.
    pub added: Vec<u64>,
    /// Users who were members already.
    pub already_members: Vec<u64>,
    /// Users not added because the group reached its size limit.
    pub over_limit: Vec<u64>,
    /// Users invited: they join when they accept (`group_add_policy`).
    #[serde(default)]
    pub invited: Vec<u64>,
    /// Users neither added nor invited: one of the two blocks the other.
    #[serde(default)]
    pub refused: Vec<u64>,
    /// Users neither added nor invited: banned from the group.
    #[serde(default)]
    pub banned: Vec<u64>,
}

/// A pending invitation to a group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvitationView {
    /// The group.
    pub group_id: u64,
    /// Its name.
    pub name: String,
    /// Who invited the caller.
    pub inviter: u64,
    /// The inviter's name.
    pub inviter_name: String,
    /// When, ms since the Unix epoch.
    pub created_ms: u64,
}

/// The caller's pending group invitations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvitationList {
    /// Oldest group id first.
    pub invitations: Vec<InvitationView>,
}

/// A role change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleBody {
    /// `admin` or `member` (ownership moves with `transfer`).
    pub role: String,
}

/// An ownership transfer.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TransferBody {
    /// The member who becomes owner.
    pub user_id: u64,
}

/// Who recalled a message, and when.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecalledView {
    /// The user who recalled it.
    pub by_user: u64,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Who edited a message last, when, and how often.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EditedView {
    /// The user who edited it (its sender).
    pub by_user: u64,
    /// When the latest edit was stored, ms since the epoch.
    pub at_ms: u64,
    /// How many times it was edited.
    pub count: u32,
    /// The seq of the latest edit event in the log.
    pub event_seq: u64,
}

/// An edit of a text message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditBody {
    /// The new text.
    pub text: String,
    /// User ids mentioned in the new text.
    #[serde(default)]
    pub mentions: Vec<u64>,
}

/// The outcome of an edit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EditView {
    /// Conversation id.
    pub conversation: String,
    /// The edited message.
    pub seq: u64,
    /// The seq of the edit event in the log.
    pub event_seq: u64,
    /// When the edit was stored, ms since the epoch.
    pub edited_at_ms: u64,
}

/// The outcome of a recall.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecallView {
    /// Conversation id.
    pub conversation: String,
    /// The recalled message.
    pub seq: u64,
    /// The seq of the recall event in the log.
    pub event_seq: u64,
}

/// Who has read a message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadsView {
    /// Conversation id.
    pub conversation: String,
    /// The message.
    pub seq: u64,
    /// Participants (the sender excluded) whose read cursor is at or past it.
    pub count: u64,
    /// Their ids, for groups up to the receipt push limit and 1:1 conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<Vec<u64>>,
}

/// A bound device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// The client's device id.
    pub device_id: String,
    /// `ios`, `android`, `web`, `desktop`, `cli`, `server` or `unspecified`.
    pub platform: String,
    /// First login from it, ms since the epoch.
    pub first_seen_ms: u64,
    /// Latest login from it.
    pub last_seen_ms: u64,
    /// Connected now.
    pub online: bool,
    /// The push service it registered with (`apns` or `fcm`), if any.
    pub push: Option<String>,
}

/// The caller's devices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    /// Least recently seen first.
    pub devices: Vec<DeviceView>,
}

/// One user's presence.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresenceView {
    /// User id.
    pub user_id: u64,
    /// Whether any of its devices is connected.
    pub online: bool,
}

/// Presence of the asked users (those who block the caller are left out).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresenceList {
    /// The users.
    pub users: Vec<PresenceView>,
}

/// Counters of the storm-prone machinery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Devices connected now.
    pub online_devices: u64,
    /// Presence counters.
    pub presence: crate::api::presence::PresenceStats,
    /// Read-receipt counters.
    pub receipts: crate::api::receipts::ReceiptStats,
}
