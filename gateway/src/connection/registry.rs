//! The online registry: which devices of which user are connected, and the outbound
//! queue of each. Sharded by user id so that routing does not contend on one lock;
//! locks are held only for a map lookup and never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use courier_protocol::conversation::mix;
use courier_protocol::ErrorCode;

pub use crate::connection::outbound::{Outbound, OutboundQueue, Pushed};

/// Lock shards of the registry.
const SHARDS: usize = 64;

/// Counters the registry keeps for `/metrics`.
#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    slow_consumers: AtomicU64,
}

/// What authenticated a session: the hash of its token. Ending a credential ends
/// the sessions registered under it.
pub type Credential = [u8; 32];

/// One connected device.
#[derive(Clone)]
struct Device {
    session_id: u64,
    device_id: Arc<str>,
    credential: Credential,
    outbound: Outbound,
}

/// One lock shard: online devices by user id.
type DevicesByUser = HashMap<u64, Vec<Device>>;

/// Every online device, by user.
pub struct Registry {
    shards: Box<[Mutex<DevicesByUser>]>,
    next_session: AtomicU64,
    online_devices: AtomicU64,
    counters: Counters,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_session: AtomicU64::new(1),
            online_devices: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }
}

impl Registry {
    fn shard(&self, user: u64) -> &Mutex<DevicesByUser> {
        &self.shards[(mix(user) % SHARDS as u64) as usize]
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a device session. An older session of the same device is closed as
    /// replaced: one device holds one session. Returns true when this is the user's
    /// first online device (a presence edge).
    pub fn register(
        &self,
        user: u64,
        session_id: u64,
        device_id: Arc<str>,
        credential: Credential,
        outbound: Outbound,
    ) -> bool {
        let (replaced, first) = {
            let mut map = self.shard(user).lock().expect("registry lock");
            let devices = map.entry(user).or_default();
            let old = devices
                .iter()
                .position(|d| d.device_id == device_id)
                .map(|i| devices.swap_remove(i));
            let first = devices.is_empty() && old.is_none();
            devices.push(Device {
                session_id,
                device_id,
                credential,
                outbound,
            });
            (old, first)
        };
        match replaced {
            Some(old) => old.outbound.close(ErrorCode::Replaced),
            None => {
                self.online_devices.fetch_add(1, Ordering::Relaxed);
            }
        }
        first
    }

    /// Removes a session (if it is still the registered one for its device). Returns
    /// true when it was the user's last online device (a presence edge).
    pub fn unregister(&self, user: u64, session_id: u64) -> bool {
        let mut map = self.shard(user).lock().expect("registry lock");
        let Some(devices) = map.get_mut(&user) else {
            return false;
        };
        let Some(i) = devices.iter().position(|d| d.session_id == session_id) else {
            return false;
        };
        devices.swap_remove(i);
        self.online_devices.fetch_sub(1, Ordering::Relaxed);
        if devices.is_empty() {
            map.remove(&user);
            return true;
        }
        false
    }

    /// Ends the session of one device of `user`, telling it `code`.
    pub fn close_device(&self, user: u64, device_id: &str, code: ErrorCode) {
        let map = self.shard(user).lock().expect("registry lock");
        if let Some(d) = map
            .get(&user)
            .and_then(|devices| devices.iter().find(|d| &*d.device_id == device_id))
        {
            d.outbound.close(code);
        }
    }

    /// Ends every session of `user` opened with `credential`, telling it `code`.
    pub fn close_credential(&self, user: u64, credential: &Credential, code: ErrorCode) {
        let map = self.shard(user).lock().expect("registry lock");
        for d in map.get(&user).into_iter().flatten() {
            if &d.credential == credential {
                d.outbound.close(code);
            }
        }
    }

    /// The credential session `session_id` of `user` was opened with.
    pub fn credential_of(&self, user: u64, session_id: u64) -> Option<Credential> {
        let map = self.shard(user).lock().expect("registry lock");
        map.get(&user)?
            .iter()
            .find(|d| d.session_id == session_id)
            .map(|d| d.credential)
    }

    /// Ends every session of `user`, telling it `code`.
    pub fn close_user(&self, user: u64, code: ErrorCode) {
        let map = self.shard(user).lock().expect("registry lock");
        for d in map.get(&user).into_iter().flatten() {
            d.outbound.close(code);
        }
    }

    /// Whether `device_id` of `user` is connected.
    pub fn device_online(&self, user: u64, device_id: &str) -> bool {
        let map = self.shard(user).lock().expect("registry lock");
        map.get(&user)
            .is_some_and(|devices| devices.iter().any(|d| &*d.device_id == device_id))
    }

    /// Queues `frame` to every online device of `user` except the session `skip`.
    /// Returns how many devices it was queued to.
    pub fn push_to_user(&self, user: u64, frame: &Bytes, skip: Option<(u64, &str)>) -> usize {
        let map = self.shard(user).lock().expect("registry lock");
        let Some(devices) = map.get(&user) else {
            return 0;
        };
        let mut queued = 0;
        for d in devices {
            if let Some((skip_user, skip_device)) = skip {
                if skip_user == user && &*d.device_id == skip_device {
                    continue;
                }
            }
            match d.outbound.push(frame.clone()) {
                Pushed::Queued => queued += 1,
                Pushed::SlowConsumer => {
                    self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                Pushed::Closed => {}
            }
        }
        self.counters
            .deliveries
            .fetch_add(queued as u64, Ordering::Relaxed);
        queued
    }

    /// Closes every session (server shutdown).
    pub fn close_all(&self, code: ErrorCode) {
        for shard in self.shards.iter() {
            let map = shard.lock().expect("registry lock");
            for d in map.values().flatten() {
                d.outbound.close(code);
            }
        }
    }

    /// Frames queued to devices through [`Self::push_to_user`] so far.
    pub fn deliveries(&self) -> u64 {
        self.counters.deliveries.load(Ordering::Relaxed)
    }

    /// Pushes that found a device's queue full (the device is closed as slow).
    pub fn slow_consumers(&self) -> u64 {
        self.counters.slow_consumers.load(Ordering::Relaxed)
    }

    /// Devices online now.
    pub fn online_devices(&self) -> u64 {
        self.online_devices.load(Ordering::Relaxed)
    }

    /// Online devices of `user`.
    pub fn devices_of(&self, user: u64) -> usize {
        self.shard(user)
            .lock()
            .expect("registry lock")
            .get(&user)
            .map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_every_device_but_the_sender() {
        let registry = Registry::default();
        let (a, mut rx_a) = Outbound::channel(4);
        let (b, mut rx_b) = Outbound::channel(4);
        registry.register(1, 10, "phone".into(), [0; 32], a);
        registry.register(1, 11, "laptop".into(), [0; 32], b);
        let frame = Bytes::from_static(b"x");
        assert_eq!(registry.push_to_user(1, &frame, Some((1, "phone"))), 1);
        assert!(rx_a.take_single().is_none());
        assert_eq!(rx_b.take_single().unwrap(), frame);
        assert_eq!(registry.push_to_user(2, &frame, None), 0);
        registry.unregister(1, 10);
        assert_eq!(registry.devices_of(1), 1);
        assert_eq!(registry.online_devices(), 1);
    }

    #[test]
    fn same_device_replaces_its_old_session() {
        let registry = Registry::default();
        let (a, _rx_a) = Outbound::channel(4);
        let (b, _rx_b) = Outbound::channel(4);
        registry.register(1, 10, "phone".into(), [0; 32], a.clone());
        registry.register(1, 11, "phone".into(), [0; 32], b);
        assert_eq!(a.close_reason(), Some(ErrorCode::Replaced));
        assert_eq!(registry.devices_of(1), 1);
        // The replaced session's unregister does not remove the new one.
        registry.unregister(1, 10);
        assert_eq!(registry.devices_of(1), 1);
    }

    #[test]
    fn closing_a_credential_ends_only_its_sessions() {
        let registry = Registry::default();
        let (a, _rx_a) = Outbound::channel(4);
        let (b, _rx_b) = Outbound::channel(4);
        let (c, _rx_c) = Outbound::channel(4);
        registry.register(1, 10, "phone".into(), [1; 32], a.clone());
        registry.register(1, 11, "laptop".into(), [2; 32], b.clone());
        registry.register(2, 12, "phone".into(), [1; 32], c.clone());
        registry.close_credential(1, &[1; 32], ErrorCode::LoggedOut);
        assert_eq!(a.close_reason(), Some(ErrorCode::LoggedOut));
        assert_eq!(b.close_reason(), None);
        assert_eq!(
            c.close_reason(),
            None,
            "another user's session is untouched"
        );
        registry.close_user(1, ErrorCode::LoggedOut);
        assert_eq!(b.close_reason(), Some(ErrorCode::LoggedOut));
        assert_eq!(c.close_reason(), None);
    }

    #[test]
    fn a_full_queue_closes_the_slow_consumer() {
        let registry = Registry::default();
        let (a, _rx) = Outbound::channel(2);
        registry.register(1, 10, "phone".into(), [0; 32], a.clone());
        let frame = Bytes::from_static(b"x");
        assert_eq!(registry.push_to_user(1, &frame, None), 1);
        assert_eq!(registry.push_to_user(1, &frame, None), 1);
        assert_eq!(registry.push_to_user(1, &frame, None), 0);
        assert_eq!(a.close_reason(), Some(ErrorCode::SlowConsumer));
        assert_eq!(registry.slow_consumers(), 1);
    }
}
