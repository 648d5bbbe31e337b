//! JSON shapes of the HTTP API as the client sees them.

use serde::{Deserialize, Serialize};

use crate::http::HistoryMessage;

/// How the caller relates to another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
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
    /// Last change, ms since the epoch.
    pub since_ms: u64,
}

/// A page of relations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationList {
    /// Entries by user id.
    pub users: Vec<Relation>,
    /// Cursor for the next page.
    #[serde(default)]
    pub next_after: Option<u64>,
}

/// Pending friend requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FriendRequests {
    /// To the caller.
    pub incoming: Vec<Relation>,
    /// From the caller.
    pub outgoing: Vec<Relation>,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group id.
    pub group_id: u64,
    /// Conversation id (`g:<id>`).
    pub conversation: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: u64,
    /// `open` or `invite`.
    pub join_policy: String,
    /// Later members see earlier messages.
    pub history_visible: bool,
    /// Members now.
    pub member_count: u64,
    /// Creation time.
    pub created_ms: u64,
    /// Only the owner and admins may send.
    #[serde(default)]
    pub muted: bool,
    /// Dismissed by its owner: read-only.
    #[serde(default)]
    pub dismissed: bool,
    /// What the group is about.
    #[serde(default)]
    pub description: String,
    /// The group's picture: `{sha256, url}`.
    #[serde(default)]
    pub avatar: Option<serde_json::Value>,
    /// The pinned announcement: `{text, version, at_ms, by_user}`.
    #[serde(default)]
    pub announcement: Option<serde_json::Value>,
    /// The caller's role.
    #[serde(default)]
    pub my_role: Option<String>,
}

/// Options of a new group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewGroup {
    /// Name.
    pub name: String,
    /// `open`, `invite` (default) or `approval` (requests approved by the owner
    /// or an admin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_policy: Option<String>,
    /// Later members see earlier messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_visible: Option<bool>,
    /// Users to add at once.
    pub members: Vec<u64>,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// Join time.
    pub joined_ms: u64,
    /// Muted in the group until this time (ms since the epoch), if muted now.
    #[serde(default)]
    pub muted_until_ms: Option<u64>,
}

/// A page of members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// Members by user id.
    pub members: Vec<Member>,
    /// Cursor for the next page.
    #[serde(default)]
    pub next_after: Option<u64>,
}

/// The result of adding members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedMembers {
    /// Added now.
    pub added: Vec<u64>,
    /// Members already.
    pub already_members: Vec<u64>,
    /// Not added: the group is full.
    #[serde(default)]
    pub over_limit: Vec<u64>,
    /// Invited: they join when they accept (the server's `group_add_policy`).
    #[serde(default)]
    pub invited: Vec<u64>,
    /// Neither added nor invited: a block stands between the adder and them.
    #[serde(default)]
    pub refused: Vec<u64>,
    /// Neither added nor invited: banned from the group.
    #[serde(default)]
    pub banned: Vec<u64>,
}

/// One entry of the conversation list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Conversation id.
    pub conversation: String,
    /// `direct` or `group`.
    pub kind: String,
    /// The peer of a direct conversation.
    #[serde(default)]
    pub peer: Option<u64>,
    /// The group of a group conversation.
    #[serde(default)]
    pub group: Option<u64>,
    /// Peer's or group's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Newest seq.
    pub last_seq: u64,
    /// The caller's read cursor.
    pub read_seq: u64,
    /// Messages by others after the read cursor.
    pub unread: u64,
    /// Unread messages that mention the caller (by name or `@all`).
    #[serde(default)]
    pub mentions: u64,
    /// Last activity, ms since the epoch.
    pub last_activity_ms: u64,
    /// The newest message.
    #[serde(default)]
    pub last_message: Option<HistoryMessage>,
    /// Muted.
    pub muted: bool,
    /// Pinned.
    pub pinned: bool,
}

/// A page of the conversation list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationList {
    /// Pinned first, then by last activity.
    pub conversations: Vec<Conversation>,
    /// Cursor for the next page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// An uploaded blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    /// Blob id (its hex SHA-256).
    pub id: String,
    /// Hex SHA-256.
    pub sha256: String,
    /// Signed download path, relative to the HTTP base URL.
    pub url: String,
    /// When `url` expires, ms since the epoch.
    pub url_expires_ms: u64,
    /// Size in bytes.
    pub size: u64,
    /// Sniffed MIME type.
    pub mime: String,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// `available`, `quarantined` or `blocked`.
    pub status: String,
}

impl Media {
    /// The message body that shares this blob (`name` is the file name shown). The
    /// server fills in kind, url, mime, size and dimensions from the stored blob.
    pub fn body(&self, name: &str) -> crate::pb::MessageBody {
        use crate::pb;
        let kind = match self.mime.split('/').next() {
            Some("image") => pb::MediaKind::Image,
            Some("video") => pb::MediaKind::Video,
            Some("audio") => pb::MediaKind::Audio,
            _ => pb::MediaKind::File,
        };
        pb::MessageBody {
            content: Some(pb::message_body::Content::Media(pb::Media {
                kind: kind as i32,
                url: self.url.clone(),
                mime: self.mime.clone(),
                size: self.size,
                sha256: self.sha256.clone(),
                width: self.width,
                height: self.height,
                duration_ms: 0,
                thumbnail: None,
                name: name.to_owned(),
                custom_kind: String::new(),
                caption: String::new(),
            })),
        }
    }
}
