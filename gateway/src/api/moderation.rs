//! Group moderation: muting the whole group (only the owner and admins may send)
//! and muting one member for a time. Each change is a group change with its system
//! event (`GroupMuted`, `MemberMuted`) in the group's log, and the store checks
//! every send against it in log order: from the event's seq on, a muted sender's
//! messages are refused with `MUTED`.
//!
//! Bans: a banned user is removed (the `MemberBanned` event is its last message
//! from the group) and cannot come back, by joining, an invitation or an approved
//! request, until the ban is lifted; the store checks every addition against the
//! bans in log order.
//!
//! The owner and admins mute the group; they mute and ban members, but only the
//! owner mutes or bans an admin, and nobody the owner.

use courier_protocol::pb::{self, system_event::Event};
use courier_storage::{GroupChange, Role};

use crate::api::dto::{BanList, BanView, GroupView, MemberView};
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
        if !may_moderate(my_role, Some(target_role)) {
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

/// Whether someone with role `mine` may mute or ban a user with role `theirs`
/// (`None`: not a member).
fn may_moderate(mine: Role, theirs: Option<Role>) -> bool {
    match theirs {
        Some(Role::Owner) => false,
        Some(Role::Admin) => mine == Role::Owner,
        Some(Role::Member) | None => mine >= Role::Admin,
    }
}

impl Api {
    /// Bans `target` from `group` (removing it if it is a member), or lifts its
    /// ban, on behalf of `by`: owner and admins ban members and outsiders, only
    /// the owner bans an admin, nobody the owner. A `MemberBanned` event goes to
    /// the members (and to the banned member, as its last message); a pending join
    /// request of the banned user is dropped.
    pub async fn ban_member(
        &self,
        group: u64,
        by: u64,
        target: u64,
        banned: bool,
    ) -> Result<(), ApiError> {
        self.require_user(target).await?;
        let (_, my_role) = self.role_in(group, by).await?;
        let target_role = self.store.member(group, target).await?.map(|m| m.role);
        if !may_moderate(my_role, target_role) {
            return Err(ApiError::forbidden(
                "the owner and admins ban members; only the owner bans admins; nobody the owner",
            ));
        }
        let event = Event::MemberBanned(pb::MemberBanned {
            user_id: target,
            banned,
            by_user: by,
        });
        let change = GroupChange::Ban {
            user: target,
            banned,
            by,
        };
        self.change_group(group, change, Some(event), by).await?;
        if banned {
            self.store.take_join_request(group, target).await?;
        }
        Ok(())
    }

    /// A page of `group`'s bans (owner and admins).
    pub async fn bans(
        &self,
        group: u64,
        by: u64,
        after: u64,
        limit: usize,
    ) -> Result<BanList, ApiError> {
        self.require_moderator(group, by, "see the bans").await?;
        let limit = limit.clamp(1, crate::api::groups::MAX_MEMBER_PAGE);
        let page = self.store.bans(group, after, limit).await?;
        let next_after = (page.len() == limit)
            .then(|| page.last().map(|b| b.user_id))
            .flatten();
        let mut bans = Vec::with_capacity(page.len());
        for b in page {
            bans.push(BanView {
                user_id: b.user_id,
                name: self.name_of(b.user_id).await?,
                by_user: b.by_user,
                at_ms: b.at_ms,
            });
        }
        Ok(BanList { bans, next_after })
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
    pub(crate) async fn require_moderator(
        &self,
        group: u64,
        by: u64,
        what: &str,
    ) -> Result<(), ApiError> {
        let (_, role) = self.role_in(group, by).await?;
        if role < Role::Admin {
            return Err(ApiError::forbidden(format!(
                "only the owner and admins {what}"
            )));
        }
        Ok(())
    }
}
