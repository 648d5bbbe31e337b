//! Device bindings: which devices (installations) a user has logged in from, kept on
//! the user's shard so "my devices" is one prefix scan.

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::Store;

const DEVICE_V1: u8 = 1;

/// One bound device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The client's device id.
    pub device_id: String,
    /// The protocol's platform number (iOS, Android, ...).
    pub platform: i32,
    /// First login from it (ms since the Unix epoch).
    pub first_seen_ms: u64,
    /// Latest login from it.
    pub last_seen_ms: u64,
}

fn key(user: u64, device_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + device_id.len());
    k.extend_from_slice(&user.to_be_bytes());
    k.extend_from_slice(device_id.as_bytes());
    k
}

fn encode(d: &Device) -> [u8; 21] {
    let mut out = [0u8; 21];
    let mut buf = &mut out[..];
    buf.put_u8(DEVICE_V1);
    buf.put_i32(d.platform);
    buf.put_u64(d.first_seen_ms);
    buf.put_u64(d.last_seen_ms);
    out
}

fn decode(device_id: String, v: &[u8]) -> Result<Device> {
    let mut buf = v;
    if buf.len() != 21 || buf.get_u8() != DEVICE_V1 {
        return Err(StorageError::Corrupt("device"));
    }
    Ok(Device {
        device_id,
        platform: buf.get_i32(),
        first_seen_ms: buf.get_u64(),
        last_seen_ms: buf.get_u64(),
    })
}

impl Store {
    /// `user`'s bound devices, least recently seen first.
    pub fn devices(&self, user: u64) -> Result<Vec<Device>> {
        let tree = &self.shard(self.inner.map.user(user)).userdevice_device;
        let mut out = tree
            .scan_prefix(user.to_be_bytes())
            .map(|entry| {
                let (k, v) = entry?;
                let id = String::from_utf8(k[8..].to_vec())
                    .map_err(|_| StorageError::Corrupt("device id"))?;
                decode(id, &v)
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|d| (d.last_seen_ms, d.device_id.clone()));
        Ok(out)
    }

    /// Records a login from `device_id` (binding it if new). Not flushed: a binding
    /// lost in a crash is made again at the next login.
    pub fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
    ) -> Result<Device> {
        let tree = &self.shard(self.inner.map.user(user)).userdevice_device;
        let k = key(user, device_id);
        let first_seen_ms = match tree.get(&k)? {
            Some(v) => decode(device_id.to_owned(), &v)?.first_seen_ms,
            None => now_ms,
        };
        let device = Device {
            device_id: device_id.to_owned(),
            platform,
            first_seen_ms,
            last_seen_ms: now_ms,
        };
        tree.insert(k, &encode(&device))?;
        Ok(device)
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind_device(&self, user: u64, device_id: &str) -> Result<bool> {
        let shard = self.shard(self.inner.map.user(user));
        let existed = shard
            .userdevice_device
            .remove(key(user, device_id))?
            .is_some();
        shard.db.flush()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreConfig};

    #[test]
    fn bind_list_unbind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        s.bind_device(1, "phone", 1, 10).unwrap();
        s.bind_device(1, "laptop", 4, 20).unwrap();
        let again = s.bind_device(1, "phone", 1, 30).unwrap();
        assert_eq!((again.first_seen_ms, again.last_seen_ms), (10, 30));
        let ids: Vec<String> = s
            .devices(1)
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(ids, vec!["laptop", "phone"]);
        assert!(s.unbind_device(1, "laptop").unwrap());
        assert!(!s.unbind_device(1, "laptop").unwrap());
        assert_eq!(s.devices(1).unwrap().len(), 1);
        assert!(s.devices(2).unwrap().is_empty());
    }
}
