//! Encoding of stored values: message records and per-user conversation state.
//!
//! Records start with a format version byte so the layout can evolve; decoders
//! refuse what they do not know instead of guessing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};

const MESSAGE_V1: u8 = 1;
const STATE_V1: u8 = 1;
const STATE_V2: u8 = 2;
const FLAG_RECALLED: u8 = 1;
const FLAG_MENTIONS: u8 = 2;

/// One message as stored in a conversation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The conversation this message belongs to.
    pub conversation: ConversationId,
    /// Position in the conversation, from 1, gap-free.
    pub seq: u64,
    /// The sending user.
    pub sender: u64,
    /// The device it was sent from.
    pub sender_device: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// When the server stored it (ms since the Unix epoch).
    pub server_time_ms: u64,
    /// The seq this message replies to, 0 for none.
    pub reply_to_seq: u64,
    /// The encoded message body, opaque to storage.
    pub body: Bytes,
    /// Set once the message is recalled; the body is then empty.
    pub recalled: Option<Recall>,
    /// The users the message mentions ([`MENTION_ALL`] for everyone), as the
    /// caller decided them; indexed so that a reader's mentions can be counted.
    pub mentions: Vec<u64>,
    /// Set when the message was edited (and not recalled since): who edited it last,
    /// when, how often, and the latest edit event. `body` is then the original (or
    /// nothing, once a policy that keeps no versions has erased it).
    pub edited: Option<Edited>,
}

/// In [`StoredMessage::mentions`]: the message mentions everyone (`@all`).
pub const MENTION_ALL: u64 = 0;

/// Most mentions one message may carry.
pub const MAX_MENTIONS: usize = 100;

/// The latest edit of a message, as a read finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// Who edited it (its sender).
    pub by_user: u64,
    /// When the latest edit was stored (ms since the Unix epoch).
    pub at_ms: u64,
    /// How many edits it has had.
    pub count: u32,
    /// The seq of the latest edit event in the same conversation.
    pub event_seq: u64,
    /// That event's stored body (opaque to storage: the caller's encoding of the
    /// edit, which carries the new content).
    pub event_body: Bytes,
}

/// Who recalled a message, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recall {
    /// The user who recalled it.
    pub by_user: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

impl StoredMessage {
    /// Encodes everything but the conversation and seq, which live in the key.
    pub(crate) fn encode_value(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(
            40 + self.client_msg_id.len() + self.sender_device.len() + self.body.len(),
        );
        out.put_u8(MESSAGE_V1);
        out.put_u64(self.sender);
        out.put_u64(self.server_time_ms);
        out.put_u64(self.reply_to_seq);
        let mut flags = 0;
        if self.recalled.is_some() {
            flags |= FLAG_RECALLED;
        }
        if !self.mentions.is_empty() {
            flags |= FLAG_MENTIONS;
        }
        out.put_u8(flags);
        if let Some(r) = self.recalled {
            out.put_u64(r.by_user);
            out.put_u64(r.at_ms);
        }
        if !self.mentions.is_empty() {
            // Callers cap mentions far below u16::MAX.
            out.put_u16(self.mentions.len() as u16);
            for &m in &self.mentions {
                out.put_u64(m);
            }
        }
        put_str(&mut out, &self.client_msg_id);
        put_str(&mut out, &self.sender_device);
        out.put_slice(&self.body);
        out.to_vec()
    }

    /// Where the body begins in a value written by [`Self::encode_value`].
    pub(crate) fn body_offset(value: &[u8]) -> Result<usize> {
        let corrupt = || StorageError::Corrupt("message record");
        let mut buf = value;
        if buf.remaining() < 26 || buf.get_u8() != MESSAGE_V1 {
            return Err(corrupt());
        }
        buf.advance(24);
        let flags = buf.get_u8();
        read_flagged(&mut buf, flags).ok_or_else(corrupt)?;
        get_str(&mut buf).ok_or_else(corrupt)?;
        get_str(&mut buf).ok_or_else(corrupt)?;
        Ok(value.len() - buf.remaining())
    }

    /// Decodes a value written by [`Self::encode_value`].
    pub(crate) fn decode_value(
        conversation: ConversationId,
        seq: u64,
        value: &[u8],
    ) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("message record");
        let mut buf = value;
        if buf.remaining() < 26 || buf.get_u8() != MESSAGE_V1 {
            return Err(corrupt());
        }
        let sender = buf.get_u64();
        let server_time_ms = buf.get_u64();
        let reply_to_seq = buf.get_u64();
        let flags = buf.get_u8();
        let (recalled, mentions) = read_flagged(&mut buf, flags).ok_or_else(corrupt)?;
        let client_msg_id = get_str(&mut buf).ok_or_else(corrupt)?;
        let sender_device = get_str(&mut buf).ok_or_else(corrupt)?;
        Ok(Self {
            conversation,
            seq,
            sender,
            sender_device,
            client_msg_id,
            server_time_ms,
            reply_to_seq,
            body: Bytes::copy_from_slice(buf),
            recalled,
            mentions,
            edited: None,
        })
    }
}

/// The optional parts `flags` announce: the recall mark, the mentions.
fn read_flagged(buf: &mut &[u8], flags: u8) -> Option<(Option<Recall>, Vec<u64>)> {
    if flags & !(FLAG_RECALLED | FLAG_MENTIONS) != 0 {
        return None;
    }
    let recalled = if flags & FLAG_RECALLED != 0 {
        if buf.remaining() < 16 {
            return None;
        }
        Some(Recall {
            by_user: buf.get_u64(),
            at_ms: buf.get_u64(),
        })
    } else {
        None
    };
    let mut mentions = Vec::new();
    if flags & FLAG_MENTIONS != 0 {
        if buf.remaining() < 2 {
            return None;
        }
        let n = usize::from(buf.get_u16());
        if n > MAX_MENTIONS || buf.remaining() < 8 * n {
            return None;
        }
        mentions.extend((0..n).map(|_| buf.get_u64()));
    }
    Some((recalled, mentions))
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Callers cap ids far below u16::MAX.
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn get_str(buf: &mut &[u8]) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_u16() as usize;
    if buf.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&buf[..len]).ok()?.to_owned();
    buf.advance(len);
    Some(s)
}

/// A user's state in one conversation (the per-user index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConversationState {
    /// Highest seq the user has read.
    pub read_seq: u64,
    /// Highest seq any of the user's devices acknowledged as delivered.
    pub delivered_seq: u64,
    /// The seq after which the user may see the log (groups joined later).
    pub joined_seq: u64,
    /// Notifications muted.
    pub muted: bool,
    /// Pinned to the top of the list.
    pub pinned: bool,
    /// When the user joined the conversation (ms since the Unix epoch).
    pub created_ms: u64,
    /// Which membership this entry belongs to: the seq of the group event that added
    /// the user (0 for direct conversations). A user who leaves and joins again gets
    /// a new entry with a higher value; changes made for an older one do not apply.
    pub since_seq: u64,
}

impl ConversationState {
    pub(crate) fn encode(&self) -> [u8; 42] {
        let mut out = [0u8; 42];
        let mut buf = &mut out[..];
        buf.put_u8(STATE_V2);
        buf.put_u64(self.read_seq);
        buf.put_u64(self.delivered_seq);
        buf.put_u64(self.joined_seq);
        buf.put_u8(u8::from(self.muted) | (u8::from(self.pinned) << 1));
        buf.put_u64(self.created_ms);
        buf.put_u64(self.since_seq);
        out
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self> {
        let mut buf = value;
        let version = match (buf.len(), buf.first()) {
            (34, Some(&STATE_V1)) => STATE_V1,
            (42, Some(&STATE_V2)) => STATE_V2,
            _ => return Err(StorageError::Corrupt("conversation state")),
        };
        buf.advance(1);
        let read_seq = buf.get_u64();
        let delivered_seq = buf.get_u64();
        let joined_seq = buf.get_u64();
        let flags = buf.get_u8();
        let created_ms = buf.get_u64();
        let since_seq = if version == STATE_V2 {
            buf.get_u64()
        } else {
            0
        };
        Ok(Self {
            read_seq,
            delivered_seq,
            joined_seq,
            muted: flags & 1 != 0,
            pinned: flags & 2 != 0,
            created_ms,
            since_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn message_record_round_trips(
            sender in any::<u64>(), time in any::<u64>(), reply in any::<u64>(),
            cmid in "[a-z0-9-]{0,64}", device in ".{0,32}",
            body in proptest::collection::vec(any::<u8>(), 0..300),
            recalled in proptest::option::of((any::<u64>(), any::<u64>())),
            mentions in proptest::collection::vec(any::<u64>(), 0..=MAX_MENTIONS),
        ) {
            let conversation = ConversationId::Group(3);
            let m = StoredMessage {
                conversation, seq: 9, sender, sender_device: device, client_msg_id: cmid,
                server_time_ms: time, reply_to_seq: reply, body: Bytes::from(body),
                recalled: recalled.map(|(by_user, at_ms)| Recall { by_user, at_ms }),
                mentions,
                edited: None,
            };
            let value = m.encode_value();
            let decoded = StoredMessage::decode_value(conversation, 9, &value).unwrap();
            let body = StoredMessage::body_offset(&value).unwrap();
            prop_assert_eq!(&value[body..], m.body.as_ref());
            prop_assert_eq!(decoded, m);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = StoredMessage::decode_value(ConversationId::Group(1), 1, &bytes);
            let _ = ConversationState::decode(&bytes);
        }
    }

    #[test]
    fn state_round_trips() {
        let s = ConversationState {
            read_seq: 5,
            delivered_seq: 7,
            joined_seq: 1,
            muted: true,
            pinned: false,
            created_ms: 99,
            since_seq: 4,
        };
        assert_eq!(ConversationState::decode(&s.encode()).unwrap(), s);
    }
}
