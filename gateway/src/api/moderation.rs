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
use crate::api::groups::{muted_until, role_name};
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
        Ok(MemberView {
            user_id: target,
            name: self.require_user(target).await?,
            role: role_name(member.role).into(),
            joined_ms: member.joined_ms,
            muted_until_ms: muted_until(&member),
        })
    }
}
