//! Device bindings and the per-user device cap.
//!
//! Every login names a device; the binding is recorded. When a new device would take
//! a user past `max_devices_per_user`, either the least recently seen devices are
//! unbound and their sessions kicked with `DEVICE_LIMIT` (`kick_oldest`, the default)
//! or the new login is refused with `DEVICE_LIMIT` (`refuse_new`).

use courier_protocol::ErrorCode;
use courier_storage::RelationSet;

use crate::api::dto::{DeviceView, PresenceList, PresenceView};
use crate::api::limits::Limit;
use crate::api::Api;
use crate::config::DeviceLimitPolicy;
use crate::error::ApiError;

impl Api {
    /// Records a login of `user` from `device_id` with `token`, enforcing the device
    /// cap. A token the device gives up (it keeps the newest few) is revoked. Every
    /// change is durable before this returns.
    pub async fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        token: &courier_storage::TokenHash,
    ) -> Result<(), ApiError> {
        let devices = self.store.devices(user).await?;
        let known = devices.iter().any(|d| d.device_id == device_id);
        let cap = self.config.max_devices_per_user;
        if !known && devices.len() >= cap {
            match self.config.device_limit_policy {
                DeviceLimitPolicy::RefuseNew => {
                    return Err(ApiError::new(
                        ErrorCode::DeviceLimit,
                        format!("at most {cap} devices per user; remove one first"),
                    ));
                }
                DeviceLimitPolicy::KickOldest => {
                    // `devices` is least recently seen first.
                    let oldest: Vec<String> = devices[..devices.len() + 1 - cap]
                        .iter()
                        .map(|d| d.device_id.clone())
                        .collect();
                    for device in &oldest {
                        self.store.unbind_device(user, device).await?;
                    }
                    for device in &oldest {
                        self.registry
                            .close_device(user, device, ErrorCode::DeviceLimit);
                    }
                }
            }
        }
        let bound = self
            .store
            .bind_device(
                user,
                device_id,
                platform,
                courier_storage::now_ms(),
                Some(token),
            )
            .await?;
        if let Some(evicted) = bound.evicted {
            self.store.revoke_token_hash(&evicted).await?;
            self.end_sessions(user, &[evicted]);
        }
        Ok(())
    }

    /// `user`'s devices, least recently seen first, with whether each is online.
    pub async fn devices(&self, user: u64) -> Result<Vec<DeviceView>, ApiError> {
        Ok(self
            .store
            .devices(user)
            .await?
            .into_iter()
            .map(|d| DeviceView {
                online: self.registry.device_online(user, &d.device_id),
                platform: courier_protocol::pb::Platform::try_from(d.platform).map_or(
                    "unspecified".into(),
                    |p| {
                        p.as_str_name()
                            .trim_start_matches("PLATFORM_")
                            .to_ascii_lowercase()
                    },
                ),
                push: d.push.as_ref().map(|p| {
                    match p.provider {
                        courier_storage::PushProvider::Apns => "apns",
                        courier_storage::PushProvider::Fcm => "fcm",
                    }
                    .to_owned()
                }),
                device_id: d.device_id,
                first_seen_ms: d.first_seen_ms,
                last_seen_ms: d.last_seen_ms,
            })
            .collect())
    }

    /// Unbinds a device, revokes every token it was used with, and ends its session
    /// (and any other session those tokens opened): a lost phone is locked out.
    pub async fn remove_device(&self, user: u64, device_id: &str) -> Result<(), ApiError> {
        let removed = self.store.remove_device(user, device_id).await?;
        self.registry
            .close_device(user, device_id, ErrorCode::LoggedOut);
        let removed =
            removed.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such device"))?;
        self.end_sessions(user, &removed.tokens);
        Ok(())
    }
}

impl Api {
    /// Whether `viewer` may see `target`'s presence: mutual friends (and followers
    /// when `presence_notify_followers` is on), never across a block.
    pub async fn may_see_presence(&self, viewer: u64, target: u64) -> Result<bool, ApiError> {
        if viewer == target {
            return Ok(true);
        }
        let audience = RelationSet::PresenceAudience {
            followers: self.config.presence_notify_followers,
        };
        Ok(audience.contains(&self.store.relation(target, viewer).await?))
    }

    /// Presence of `users` as `caller` may see it: users it may not see are left out.
    pub async fn presence_of(&self, caller: u64, users: &[u64]) -> Result<PresenceList, ApiError> {
        self.limits.user(Limit::Presence, caller)?;
        let mut out = Vec::with_capacity(users.len());
        for &u in users {
            if !self.may_see_presence(caller, u).await? {
                continue;
            }
            out.push(PresenceView {
                user_id: u,
                online: self.registry.devices_of(u) > 0,
            });
        }
        Ok(PresenceList { users: out })
    }
}
