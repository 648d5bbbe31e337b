//! Constructors for frames that many places build.

use crate::pb::{self, frame::Kind, Frame};
use crate::ErrorCode;

impl Frame {
    /// A frame of `kind` answering (or, with 0, not answering) request `request_id`.
    pub fn new(request_id: u64, kind: Kind) -> Self {
        Frame {
            request_id,
            kind: Some(kind),
        }
    }

    /// An `Error` frame.
    pub fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(
            request_id,
            Kind::Error(pb::Error {
                code: code as i32,
                message: message.into(),
                retry_after_ms: 0,
            }),
        )
    }

    /// A `Kick` frame: the server is about to close the session for `code`.
    pub fn kick(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self::new(
            0,
            Kind::Kick(pb::Kick {
                code: code as i32,
                reason: reason.into(),
            }),
        )
    }

    /// The frame's type name, for logs and error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            None => "unknown",
            Some(kind) => match kind {
                Kind::Hello(_) => "Hello",
                Kind::Welcome(_) => "Welcome",
                Kind::Heartbeat(_) => "Heartbeat",
                Kind::HeartbeatAck(_) => "HeartbeatAck",
                Kind::Send(_) => "Send",
                Kind::SendAck(_) => "SendAck",
                Kind::Deliver(_) => "Deliver",
                Kind::DeliveryAck(_) => "DeliveryAck",
                Kind::SyncRequest(_) => "SyncRequest",
                Kind::SyncResponse(_) => "SyncResponse",
                Kind::PullHistory(_) => "PullHistory",
                Kind::HistoryPage(_) => "HistoryPage",
                Kind::Recall(_) => "Recall",
                Kind::RecallAck(_) => "RecallAck",
                Kind::ReadReport(_) => "ReadReport",
                Kind::ReadReceipt(_) => "ReadReceipt",
                Kind::PresenceBatch(_) => "PresenceBatch",
                Kind::PresenceSubscribe(_) => "PresenceSubscribe",
                Kind::Kick(_) => "Kick",
                Kind::Error(_) => "Error",
                Kind::SetPushToken(_) => "SetPushToken",
                Kind::PushTokenSet(_) => "PushTokenSet",
                Kind::Typing(_) => "Typing",
                Kind::TypingNotice(_) => "TypingNotice",
                Kind::Edit(_) => "Edit",
                Kind::EditAck(_) => "EditAck",
                Kind::React(_) => "React",
                Kind::ReactAck(_) => "ReactAck",
                Kind::Hide(_) => "Hide",
                Kind::Hidden(_) => "Hidden",
                Kind::JoinRequested(_) => "JoinRequested",
            },
        }
    }
}

impl pb::MessageBody {
    /// A text body that mentions `users` (and, `all`, everyone: `@all`).
    pub fn text_mentioning(text: impl Into<String>, users: Vec<u64>, all: bool) -> Self {
        pb::MessageBody {
            content: Some(pb::message_body::Content::Text(pb::Text {
                text: text.into(),
                mentions: users,
                mention_all: all,
            })),
        }
    }

    /// A plain text body.
    pub fn text(text: impl Into<String>) -> Self {
        pb::MessageBody {
            content: Some(pb::message_body::Content::Text(pb::Text {
                text: text.into(),
                mentions: Vec::new(),
                mention_all: false,
            })),
        }
    }

    /// The text of a text body.
    pub fn as_text(&self) -> Option<&str> {
        match &self.content {
            Some(pb::message_body::Content::Text(t)) => Some(&t.text),
            _ => None,
        }
    }
}
