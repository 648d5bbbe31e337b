//! Group moderation: muting the whole group (only the owner and admins may send)
//! and muting one member for a time. Each change is a group change with its system
//! event (`GroupMuted`, `MemberMuted`) in the group's log, and the store checks
//! every send against it in log order: from the event's seq on, a muted sender's
//! messages are refused with `MUTED`.
//!
//! The owner and admins mute the group; they mute members, but only the owner
//! mutes an admin, and nobody mutes the owner.

use courier_protocol::pb::{self, system_event::Event};
use courier_storage::{GroupChange, Role};

use crate::api::dto::{GroupView, MemberView};
use crate::api::Api;
use crate::error::ApiError;

/// Longest mute of one member: ten years.
pub const MAX_MUTE_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

impl Api {
    /// Mutes (or unmutes) `group` on behalf of `by` (its owner or an admin).
    pub async fn mute_group(
        &self,
        group: u64,
        by: u64,
        muted: bool,
    ) -> Result<GroupView, ApiError> {
        let (_, my_role) = self.role_in(group, by).await?;
        if my_role < Role::Admin {
            return Err(ApiError::forbidden(
                "only the owner and admins mute the group",
            ));
        }
        let event = Event::GroupMuted(pb::GroupMuted { muted, by_user: by });
        self.change_group(group, GroupChange::MuteAll { muted }, Some(event), by)
            .await?;
        self.group_info(group, by).await
    }

    /// Mutes `target` in `group` for `duration_ms` (0 unmutes) on behalf of `by`.
    pub async fn mute_member(
        &self,
        group: u64,
        by: u64,
        target: u64,
        duration_ms: u64,
    ) -> Result<MemberView, ApiError> {
        if duration_ms > MAX_MUTE_MS {
            return Err(ApiError::invalid("a mute lasts at most ten years"));
        }
        let (_, my_role) = self.role_in(group, by).await?;
        let target_role = self
            .store
            .member(group, target)
            .await?
            .ok_or_else(|| ApiError::new(courier_protocol::ErrorCode::NotFound, "not a member"))?
            .role;
        let allowed = match target_role {
            Role::Owner => false,
            Role::Admin => my_role == Role::Owner,
            Role::Member => my_role >= Role::Admin,
        };
        if !allowed {
            return Err(ApiError::forbidden(
                "the owner and admins mute members; only the owner mutes admins; nobody the owner",
            ));
        }
        let until_ms = match duration_ms {
            0 => 0,
            d => courier_storage::now_ms().saturating_add(d),
        };
        let event = Event::MemberMuted(pb::MemberMuted {
            user_id: target,
            until_ms,
            by_user: by,
        });
        let changed = self
            .change_group(
                group,
                GroupChange::MuteMember {
                    user: target,
                    until_ms,
                },
                Some(event),
                by,
            )
            .await?;
        let member = changed
            .member
            .ok_or_else(|| ApiError::internal("a mute returned no member"))?;
        self.member_view(&member).await
    }
}

impl Api {
    /// Sets what `group` says of itself (owner or admin): its description (at most
    /// 1024 bytes) and picture (the SHA-256 of an image `by` uploaded; empty
    /// removes it). A `GroupProfileChanged` event goes to the members.
    pub async fn set_group_profile(
        &self,
        group: u64,
        by: u64,
        description: Option<String>,
        avatar: Option<String>,
    ) -> Result<GroupView, ApiError> {
        self.require_moderator(group, by, "change the group's description and picture")
            .await?;
        if let Some(d) = &description {
            crate::api::hygiene::check_chars("description", d)?;
        }
        if let Some(sha256) = avatar.as_deref().filter(|a| !a.is_empty()) {
            let blob = self.check_media_use(by, sha256).await?;
            if !blob.mime.starts_with("image/") {
                return Err(ApiError::invalid("a group picture must be an image"));
            }
            // A picture in use is never garbage-collected.
            self.store
                .update_blob(sha256, courier_storage::BlobUpdate::Referenced)
                .await?;
        }
        let event = Event::GroupProfileChanged(pb::GroupProfileChanged {
            description: description.clone(),
            avatar: avatar.clone(),
            by_user: by,
        });
        let change = GroupChange::SetProfile {
            description,
            avatar,
            announcement: None,
            by,
        };
        change.validate()?;
        self.change_group(group, change, Some(event), by).await?;
        self.group_info(group, by).await
    }

    /// Pins `text` as `group`'s announcement (owner or admin; empty takes it down):
    /// a new version, announced by an `AnnouncementChanged` event.
    pub async fn set_announcement(
        &self,
        group: u64,
        by: u64,
        text: String,
    ) -> Result<GroupView, ApiError> {
        self.require_moderator(group, by, "change the announcement")
            .await?;
        crate::api::hygiene::check_chars("announcement", &text)?;
        let event = Event::AnnouncementChanged(pb::AnnouncementChanged {
            text: text.clone(),
            version: 0,
            by_user: by,
        });
        let change = GroupChange::SetProfile {
            description: None,
            avatar: None,
            announcement: Some(text),
            by,
        };
        change.validate()?;
        self.change_group(group, change, Some(event), by).await?;
        self.group_info(group, by).await
    }

    /// Dismisses `group` (its owner only): a `GroupDismissed` event, then nobody
    /// sends or joins; the members keep its history, read-only.
    pub async fn dismiss_group(&self, group: u64, by: u64) -> Result<GroupView, ApiError> {
        let (_, role) = self.role_in(group, by).await?;
        if role != Role::Owner {
            return Err(ApiError::forbidden("only the owner dismisses the group"));
        }
        let event = Event::GroupDismissed(pb::GroupDismissed { by_user: by });
        self.change_group(group, GroupChange::Dismiss, Some(event), by)
            .await?;
        self.group_info(group, by).await
    }

    /// Refuses `by` unless it is `group`'s owner or an admin.
    async fn require_moderator(&self, group: u64, by: u64, what: &str) -> Result<(), ApiError> {
        let (_, role) = self.role_in(group, by).await?;
        if role < Role::Admin {
            return Err(ApiError::forbidden(format!(
                "only the owner and admins {what}"
            )));
        }
        Ok(())
    }
}
