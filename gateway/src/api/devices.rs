//! Device bindings and the per-user device cap.
//!
//! Every login names a device; the binding is recorded. When a new device would take
//! a user past `max_devices_per_user`, either the least recently seen devices are
//! unbound and their sessions kicked with `DEVICE_LIMIT` (`kick_oldest`, the default)
//! or the new login is refused with `DEVICE_LIMIT` (`refuse_new`).

use courier_protocol::ErrorCode;

use crate::api::dto::{DeviceView, PresenceList, PresenceView};
use crate::api::Api;
use crate::config::DeviceLimitPolicy;
use crate::error::ApiError;

impl Api {
    /// Records a login of `user` from `device_id`, enforcing the device cap.
    pub fn bind_device(&self, user: u64, device_id: &str, platform: i32) -> Result<(), ApiError> {
        let devices = self.store.devices(user)?;
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
                    for old in &devices[..devices.len() + 1 - cap] {
                        self.store.unbind_device(user, &old.device_id)?;
                        self.registry
                            .close_device(user, &old.device_id, ErrorCode::DeviceLimit);
                    }
                }
            }
        }
        self.store
            .bind_device(user, device_id, platform, courier_storage::now_ms())?;
        Ok(())
    }

    /// `user`'s devices, least recently seen first, with whether each is online.
    pub fn devices(&self, user: u64) -> Result<Vec<DeviceView>, ApiError> {
        Ok(self
            .store
            .devices(user)?
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
                device_id: d.device_id,
                first_seen_ms: d.first_seen_ms,
                last_seen_ms: d.last_seen_ms,
            })
            .collect())
    }

    /// Unbinds a device and ends its session.
    pub fn remove_device(&self, user: u64, device_id: &str) -> Result<(), ApiError> {
        if !self.store.unbind_device(user, device_id)? {
            return Err(ApiError::new(ErrorCode::NotFound, "no such device"));
        }
        self.registry
            .close_device(user, device_id, ErrorCode::LoggedOut);
        Ok(())
    }
}

impl Api {
    /// Presence of `users` as `caller` may see it: users who block the caller are
    /// left out.
    pub fn presence_of(&self, caller: u64, users: &[u64]) -> Result<PresenceList, ApiError> {
        let mut out = Vec::with_capacity(users.len());
        for &u in users {
            if self.store.relation(u, caller)?.blocking {
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
