//! The online registry: which devices of which user are connected, and the outbound
//! queue of each. Sharded by user id so that routing does not contend on one lock;
//! locks are held only for a map lookup and never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use courier_protocol::conversation::mix;
use courier_protocol::ErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lock shards of the registry.
const SHARDS: usize = 64;

/// The sending side of one connection's outbound queue, plus the switch that closes
/// the connection when the queue overflows.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Bytes>,
    control: Arc<SessionControl>,
}

/// Counters the registry keeps for `/metrics`.
#[derive(Default)]
struct Counters {
    deliveries: AtomicU64,
    slow_consumers: AtomicU64,
}

/// Lets other parts of the server end a session, with a reason.
#[derive(Default)]
pub struct SessionControl {
    closed: CancellationToken,
    reason: AtomicI32,
}

impl SessionControl {
    /// Asks the session to close, telling the client `code`. The first reason wins.
    pub fn close(&self, code: ErrorCode) {
        let _ = self
            .reason
            .compare_exchange(0, code as i32, Ordering::AcqRel, Ordering::Acquire);
        self.closed.cancel();
    }

    /// Resolves once [`Self::close`] was called.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// The reason given to [`Self::close`].
    pub fn reason(&self) -> ErrorCode {
        ErrorCode::try_from(self.reason.load(Ordering::Acquire)).unwrap_or(ErrorCode::Unspecified)
    }
}

impl Outbound {
    /// A queue of `capacity` frames; the receiver belongs to the connection's writer.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Bytes>, Arc<SessionControl>) {
        let (tx, rx) = mpsc::channel(capacity);
        let control = Arc::new(SessionControl::default());
        (
            Self {
                tx,
                control: control.clone(),
            },
            rx,
            control,
        )
    }

    /// Queues an encoded frame without waiting. A full queue means the client does not
    /// keep up: the session is closed as a slow consumer (it resyncs by seq later).
    pub fn push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.control.close(ErrorCode::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a response to the client's own request, waiting for room.
    pub async fn reply(&self, frame: Bytes) -> bool {
        self.tx.send(frame).await.is_ok()
    }
}

/// One connected device.
#[derive(Clone)]
struct Device {
    session_id: u64,
    device_id: Arc<str>,
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
                outbound,
            });
            (old, first)
        };
        match replaced {
            Some(old) => old.outbound.control.close(ErrorCode::Replaced),
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
            d.outbound.control.close(code);
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
            if d.outbound.push(frame.clone()) {
                queued += 1;
            } else if d.outbound.control.reason() == ErrorCode::SlowConsumer {
                self.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
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
                d.outbound.control.close(code);
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
        let (a, mut rx_a, _) = Outbound::channel(4);
        let (b, mut rx_b, _) = Outbound::channel(4);
        registry.register(1, 10, "phone".into(), a);
        registry.register(1, 11, "laptop".into(), b);
        let frame = Bytes::from_static(b"x");
        assert_eq!(registry.push_to_user(1, &frame, Some((1, "phone"))), 1);
        assert!(rx_a.try_recv().is_err());
        assert_eq!(rx_b.try_recv().unwrap(), frame);
        assert_eq!(registry.push_to_user(2, &frame, None), 0);
        registry.unregister(1, 10);
        assert_eq!(registry.devices_of(1), 1);
        assert_eq!(registry.online_devices(), 1);
    }

    #[test]
    fn same_device_replaces_its_old_session() {
        let registry = Registry::default();
        let (a, _rx_a, control_a) = Outbound::channel(4);
        let (b, _rx_b, _) = Outbound::channel(4);
        registry.register(1, 10, "phone".into(), a);
        registry.register(1, 11, "phone".into(), b);
        assert_eq!(control_a.reason(), ErrorCode::Replaced);
        assert_eq!(registry.devices_of(1), 1);
        // The replaced session's unregister does not remove the new one.
        registry.unregister(1, 10);
        assert_eq!(registry.devices_of(1), 1);
    }

    #[test]
    fn a_full_queue_closes_the_slow_consumer() {
        let registry = Registry::default();
        let (a, _rx, control) = Outbound::channel(2);
        registry.register(1, 10, "phone".into(), a);
        let frame = Bytes::from_static(b"x");
        assert_eq!(registry.push_to_user(1, &frame, None), 1);
        assert_eq!(registry.push_to_user(1, &frame, None), 1);
        assert_eq!(registry.push_to_user(1, &frame, None), 0);
        assert_eq!(control.reason(), ErrorCode::SlowConsumer);
    }
}
