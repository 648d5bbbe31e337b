//! Delete for me, clear history, delete a conversation: changes to one user's own
//! view of a conversation, on all its devices, that never touch anyone else's.
//!
//! Hidden messages leave the user's history pages; a cleared conversation shows
//! nothing up to the cleared seq (which only moves up, and moves the read cursor
//! with it); a conversation cleared through its newest message leaves the user's
//! list until the next message. The user's other online devices get a `Hidden`
//! frame at once; one that was away learns of the change from sync, which lists
//! the conversations whose view changed since the view version the device saw.

use courier_protocol::pb::{self, frame::Kind, Frame};
use courier_protocol::{encode_frame, ConversationId};
use courier_storage::{HiddenView, MAX_HIDE_AT_ONCE};

use crate::api::Api;
use crate::error::ApiError;

/// Hidden messages a history page or a sync entry takes into account (the newest).
pub const MAX_HIDDEN_SHOWN: usize = 1_000;

impl Api {
    /// Applies `hide` to `user`'s view (from `device`, which is not told again).
    pub async fn hide(
        &self,
        user: u64,
        device: &str,
        c: &ConversationId,
        hide: &pb::Hide,
    ) -> Result<pb::Hidden, ApiError> {
        self.authorize(user, c).await?;
        if hide.seqs.len() > MAX_HIDE_AT_ONCE {
            return Err(ApiError::invalid(format!(
                "at most {MAX_HIDE_AT_ONCE} messages may be hidden at once"
            )));
        }
        let last = self.store.last_seq(c).await?;
        if hide.seqs.iter().any(|&s| s == 0 || s > last) {
            return Err(ApiError::invalid("no such message to hide"));
        }
        let through = match hide.delete_conversation {
            true => last,
            false => hide.clear_through.min(last),
        };
        if !hide.seqs.is_empty() {
            self.store.hide_messages(user, c, &hide.seqs).await?;
        }
        let cleared_seq = match through {
            0 => self.store.hidden_view(user, c, 0).await?.cleared_seq,
            through => {
                let cleared = self.store.clear_history(user, c, through).await?;
                // What one cleared, one has seen: no unread count below it.
                self.mark_read(user, c, cleared, Some(device)).await?;
                cleared
            }
        };
        let (view_version, _) = self.store.views_changed_since(user, u64::MAX).await?;
        let hidden = pb::Hidden {
            conversation: c.to_string(),
            seqs: hide.seqs.clone(),
            cleared_seq,
            view_version,
        };
        let frame = encode_frame(&Frame::new(0, Kind::Hidden(hidden.clone())));
        self.registry
            .push_to_user(user, &frame, (!device.is_empty()).then_some((user, device)));
        Ok(hidden)
    }

    /// `user`'s view of `c` as history needs it: the cleared seq and the newest
    /// hidden messages.
    pub async fn view_of(&self, user: u64, c: &ConversationId) -> Result<HiddenView, ApiError> {
        Ok(self.store.hidden_view(user, c, MAX_HIDDEN_SHOWN).await?)
    }
}
