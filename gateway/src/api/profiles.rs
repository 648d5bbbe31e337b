//! Profiles and user search. A user shows its name, its display name, a status
//! line, a picture (an image it uploaded) and the application's own fields
//! (bounded); a change reaches its online friends (and lease subscribers) through
//! presence, coalesced per recipient (`PresenceChange.profile_changed`).
//!
//! Search finds users by exact name and by display-name prefix (case-insensitive),
//! paged and limited; never a user who blocks the searcher or whom it blocks, nor
//! one that turned `discoverable` off.

use courier_protocol::ConversationId;
use courier_storage::Profile;
use serde_json::{json, Value};

use crate::api::dto::{ProfileChange, UserInfo, UserSearchPage};
use crate::api::Api;
use crate::error::ApiError;

/// Largest search page.
pub const MAX_SEARCH_PAGE: usize = 50;
/// Shortest display-name prefix searched, in characters.
pub const MIN_SEARCH_CHARS: usize = 2;

/// Most fellow group members one profile change is pushed to.
pub const MAX_PROFILE_NOTICES: usize = 10_000;

impl Api {
    /// What `viewer` is shown of `user` (its `discoverable` only to itself).
    pub async fn user_info(
        &self,
        viewer: u64,
        user: u64,
        name: String,
    ) -> Result<UserInfo, ApiError> {
        let profile = self.store.profile(user).await?;
        Ok(UserInfo {
            user_id: user,
            name,
            display_name: self.store.display_name(user).await?,
            status: (!profile.status.is_empty()).then_some(profile.status),
            avatar: (!profile.avatar.is_empty()).then(
                || json!({"sha256": profile.avatar, "url": self.message_url(&profile.avatar)}),
            ),
            custom: (!profile.custom.is_empty()).then(|| {
                Value::Object(
                    profile
                        .custom
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                )
            }),
            discoverable: (viewer == user).then_some(profile.discoverable),
        })
    }

    /// Applies `change` to `user`'s profile (and display name); its audience hears
    /// of it through presence.
    pub async fn update_profile(&self, user: u64, change: ProfileChange) -> Result<(), ApiError> {
        if let Some(name) = change.display_name {
            self.set_display_name(user, name.as_deref()).await?;
        }
        if change.status.is_none()
            && change.avatar.is_none()
            && change.custom.is_none()
            && change.discoverable.is_none()
        {
            return Ok(());
        }
        let mut profile = self.store.profile(user).await?;
        if let Some(status) = change.status {
            profile.status = status;
        }
        if let Some(avatar) = change.avatar {
            if !avatar.is_empty() {
                let blob = self.check_media_use(user, &avatar).await?;
                if !blob.mime.starts_with("image/") {
                    return Err(ApiError::invalid("a picture must be an image"));
                }
                self.store
                    .update_blob(&avatar, courier_storage::BlobUpdate::Referenced)
                    .await?;
            }
            profile.avatar = avatar;
        }
        if let Some(custom) = change.custom {
            let mut fields: Vec<(String, String)> = custom.into_iter().collect();
            fields.sort();
            profile.custom = fields;
        }
        if let Some(discoverable) = change.discoverable {
            profile.discoverable = discoverable;
        }
        profile.validate()?;
        self.store.set_profile(user, &profile).await?;
        self.tell_profile_changed(user).await
    }

    /// Tells `user`'s presence audience and the members of its groups (up to
    /// `profile_notify_max_members` each, at most [`MAX_PROFILE_NOTICES`] users in
    /// all) that its profile changed.
    pub(crate) async fn tell_profile_changed(&self, user: u64) -> Result<(), ApiError> {
        let max = self.config.profile_notify_max_members;
        let mut members: Vec<u64> = Vec::new();
        if max > 0 {
            for entry in self.store.conversations(user).await? {
                let ConversationId::Group(g) = entry.conversation else {
                    continue;
                };
                let group = self.members.members(g).await?;
                if group.len() <= max && members.len() + group.len() <= MAX_PROFILE_NOTICES {
                    members.extend(group.iter().copied());
                }
            }
            members.sort_unstable();
            members.dedup();
        }
        if let Some(cluster) = &self.cluster {
            cluster.profile_changed(user, &members);
        }
        self.presence.profile_changed(user, members);
        Ok(())
    }

    /// Users `viewer` may find by `query`: the user named exactly so first (on the
    /// first page), then display names starting with it, after `cursor`.
    pub async fn search_users(
        &self,
        viewer: u64,
        query: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<UserSearchPage, ApiError> {
        let query = query.trim();
        if query.chars().count() < MIN_SEARCH_CHARS {
            return Err(ApiError::invalid(format!(
                "search for at least {MIN_SEARCH_CHARS} characters"
            )));
        }
        let limit = limit.clamp(1, MAX_SEARCH_PAGE);
        let mut users = Vec::new();
        if cursor.is_none() {
            if let Some(account) = self.store.account_by_name(query).await? {
                if self.findable(viewer, account.id).await? {
                    users.push(self.user_info(viewer, account.id, account.name).await?);
                }
            }
        }
        let mut after: Option<(String, u64)> = match cursor {
            None => None,
            Some(c) => {
                let (id, name) = c
                    .split_once(':')
                    .ok_or_else(|| ApiError::invalid("bad cursor"))?;
                Some((
                    name.to_owned(),
                    id.parse().map_err(|_| ApiError::invalid("bad cursor"))?,
                ))
            }
        };
        let mut next_cursor = None;
        // A few rounds at most: hits that may not be shown give way to the next.
        for _ in 0..4 {
            let hits = self
                .store
                .search_display_names(
                    query,
                    after.as_ref().map(|(n, id)| (n.as_str(), *id)),
                    limit,
                )
                .await?;
            let exhausted = hits.len() < limit;
            for (user, display) in hits {
                after = Some((courier_storage::search_key(&display), user));
                if users.iter().any(|u: &UserInfo| u.user_id == user)
                    || !self.findable(viewer, user).await?
                {
                    continue;
                }
                let Some(account) = self.store.account(user).await? else {
                    continue;
                };
                users.push(self.user_info(viewer, user, account.name).await?);
                if users.len() == limit {
                    break;
                }
            }
            if users.len() >= limit && !exhausted {
                next_cursor = after.as_ref().map(|(n, id)| format!("{id}:{n}"));
                break;
            }
            if exhausted {
                break;
            }
        }
        users.truncate(limit);
        Ok(UserSearchPage { users, next_cursor })
    }

    /// Whether `viewer` may find `user`: discoverable, and no block either way.
    async fn findable(&self, viewer: u64, user: u64) -> Result<bool, ApiError> {
        if viewer == user {
            return Ok(true);
        }
        let relation = self.store.relation(viewer, user).await?;
        if relation.blocking || relation.blocked_by {
            return Ok(false);
        }
        let profile: Profile = self.store.profile(user).await?;
        Ok(profile.discoverable)
    }
}
