//! Device bindings: which devices (installations) a user has logged in from, kept on
//! the user's shard so "my devices" is one prefix scan.
//!
//! Each binding remembers the tokens the device opened sessions with (the few most
//! recent), written by the same update that records the login, so that removing a
//! device can revoke the credentials it holds at no extra cost per login.

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::ops::{Op, Tree};
use crate::tokens::TokenHash;
use crate::writer::OpsRequest;
use crate::Store;

const DEVICE_V1: u8 = 1;
const DEVICE_V2: u8 = 2;
const DEVICE_V3: u8 = 3;
/// Longest push token (APNs tokens are 64 hex digits, FCM tokens ~160 characters).
pub const MAX_PUSH_TOKEN_BYTES: usize = 512;
/// Longest application id (bundle id or Firebase project id).
pub const MAX_PUSH_APP_ID_BYTES: usize = 128;
/// Tokens a device record remembers; the oldest gives way (and is revoked by the
/// caller) past it.
pub const MAX_DEVICE_TOKENS: usize = 8;

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
    /// Tokens it opened sessions with, oldest first.
    pub tokens: Vec<TokenHash>,
    /// Where to push to it while it is offline, if it registered.
    pub push: Option<PushToken>,
}

/// Which push service delivers to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushProvider {
    /// Apple Push Notification service.
    Apns = 1,
    /// Firebase Cloud Messaging.
    Fcm = 2,
}

/// A device's registration with a push service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToken {
    /// The service.
    pub provider: PushProvider,
    /// The service's token for the app on this device.
    pub token: String,
    /// The app: its bundle id (APNs topic) or Firebase project id.
    pub app_id: String,
    /// APNs development environment (sandbox endpoint).
    pub sandbox: bool,
    /// The credential the registration was made with: pushes stop once it is revoked.
    pub credential: TokenHash,
    /// When that credential is an application token (JWT), its expiry (ms since the
    /// epoch); 0 for Courier tokens, which the store itself revokes.
    pub credential_expires_ms: u64,
    /// When it was registered.
    pub registered_ms: u64,
}

/// What recording a login from a device did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The binding as it stands now.
    pub device: Device,
    /// A token the device no longer keeps (past [`MAX_DEVICE_TOKENS`]): the caller
    /// revokes it, so that every live token of a device is known to its record.
    pub evicted: Option<TokenHash>,
}

/// Adds `token` to a device's tokens (oldest first) unless it is there already;
/// past [`MAX_DEVICE_TOKENS`] the oldest gives way and is returned, for the caller
/// to revoke. The same rule for every backend.
pub fn remember_token(tokens: &mut Vec<TokenHash>, token: &TokenHash) -> Option<TokenHash> {
    if tokens.contains(token) {
        return None;
    }
    let evicted = (tokens.len() >= MAX_DEVICE_TOKENS).then(|| tokens.remove(0));
    tokens.push(*token);
    evicted
}

fn key(user: u64, device_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + device_id.len());
    k.extend_from_slice(&user.to_be_bytes());
    k.extend_from_slice(device_id.as_bytes());
    k
}

fn encode(d: &Device) -> Vec<u8> {
    let mut out = Vec::with_capacity(23 + 32 * d.tokens.len());
    out.put_u8(DEVICE_V3);
    out.put_i32(d.platform);
    out.put_u64(d.first_seen_ms);
    out.put_u64(d.last_seen_ms);
    out.put_u8(d.tokens.len() as u8);
    for t in &d.tokens {
        out.put_slice(t);
    }
    match &d.push {
        None => out.put_u8(0),
        Some(p) => {
            out.put_u8(p.provider as u8);
            out.put_u8(p.sandbox as u8);
            out.put_u16(p.token.len() as u16);
            out.put_slice(p.token.as_bytes());
            out.put_u16(p.app_id.len() as u16);
            out.put_slice(p.app_id.as_bytes());
            out.put_slice(&p.credential);
            out.put_u64(p.credential_expires_ms);
            out.put_u64(p.registered_ms);
        }
    }
    out
}

fn decode_push(buf: &mut &[u8]) -> Result<Option<PushToken>> {
    let corrupt = || StorageError::Corrupt("device push token");
    let string = |buf: &mut &[u8]| -> Result<String> {
        if buf.remaining() < 2 {
            return Err(corrupt());
        }
        let n = buf.get_u16() as usize;
        if buf.remaining() < n {
            return Err(corrupt());
        }
        let s = String::from_utf8(buf[..n].to_vec()).map_err(|_| corrupt())?;
        buf.advance(n);
        Ok(s)
    };
    let provider = match buf.first() {
        Some(0) if buf.len() == 1 => return Ok(None),
        Some(1) if buf.len() > 1 => PushProvider::Apns,
        Some(2) if buf.len() > 1 => PushProvider::Fcm,
        _ => return Err(corrupt()),
    };
    buf.advance(1);
    let sandbox = buf.get_u8() == 1;
    let token = string(buf)?;
    let app_id = string(buf)?;
    if buf.remaining() != 32 + 16 {
        return Err(corrupt());
    }
    let credential: TokenHash = buf[..32].try_into().map_err(|_| corrupt())?;
    buf.advance(32);
    Ok(Some(PushToken {
        provider,
        token,
        app_id,
        sandbox,
        credential,
        credential_expires_ms: buf.get_u64(),
        registered_ms: buf.get_u64(),
    }))
}

fn decode(device_id: String, v: &[u8]) -> Result<Device> {
    let corrupt = || StorageError::Corrupt("device");
    let mut buf = v;
    let version = match buf.len() {
        0 => return Err(corrupt()),
        _ => buf.get_u8(),
    };
    if buf.remaining() < 20 || !matches!(version, DEVICE_V1 | DEVICE_V2 | DEVICE_V3) {
        return Err(corrupt());
    }
    let platform = buf.get_i32();
    let first_seen_ms = buf.get_u64();
    let last_seen_ms = buf.get_u64();
    let mut tokens = Vec::new();
    let mut push = None;
    if version >= DEVICE_V2 {
        if !buf.has_remaining() {
            return Err(corrupt());
        }
        let n = buf.get_u8() as usize;
        let exact = version == DEVICE_V2;
        if buf.remaining() < 32 * n || (exact && buf.remaining() != 32 * n) {
            return Err(corrupt());
        }
        for chunk in buf[..32 * n].chunks_exact(32) {
            tokens.push(chunk.try_into().map_err(|_| corrupt())?);
        }
        buf.advance(32 * n);
        if version == DEVICE_V3 {
            push = decode_push(&mut buf)?;
        }
    } else if buf.has_remaining() {
        return Err(corrupt());
    }
    Ok(Device {
        device_id,
        platform,
        first_seen_ms,
        last_seen_ms,
        tokens,
        push,
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

    /// Records a login from `device_id` (binding it if new) with `token`, durably
    /// (through the user's shard's commit log). Awaits the commit without holding a
    /// thread: a burst of logins does not grow the blocking pool.
    pub async fn bind_device(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>,
    ) -> Result<Bound> {
        let _guard = self.device_lock(user).lock().await;
        let (shard, op, bound) = self.plan_binding(user, device_id, platform, now_ms, token)?;
        self.run_ops::<()>(shard, OpsRequest::decided(vec![op]))
            .await?;
        Ok(bound)
    }

    /// The record a binding writes (read, changed), and what it answers.
    fn plan_binding(
        &self,
        user: u64,
        device_id: &str,
        platform: i32,
        now_ms: u64,
        token: Option<&TokenHash>,
    ) -> Result<(usize, Op, Bound)> {
        let shard = self.inner.map.user(user);
        let tree = &self.shard(shard).userdevice_device;
        let k = key(user, device_id);
        let (first_seen_ms, mut tokens, push) = match tree.get(&k)? {
            Some(v) => {
                let old = decode(device_id.to_owned(), &v)?;
                (old.first_seen_ms, old.tokens, old.push)
            }
            None => (now_ms, Vec::new(), None),
        };
        let evicted = token.and_then(|t| remember_token(&mut tokens, t));
        let device = Device {
            device_id: device_id.to_owned(),
            platform,
            first_seen_ms,
            last_seen_ms: now_ms,
            tokens,
            push,
        };
        let op = Op::Put {
            shard: shard as u16,
            tree: Tree::Device,
            key: k,
            value: encode(&device),
        };
        Ok((shard, op, Bound { device, evicted }))
    }

    /// Sets (`Some`) or clears (`None`) the push registration of a bound device,
    /// durably; with `replacing`, only while the device's registration is that token
    /// (a token the service rejected is removed, a newer one stays). Returns whether
    /// the device exists (and, with `replacing`, held that token).
    pub async fn set_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>,
    ) -> Result<bool> {
        if let (Some(p), None) = (&push, replacing) {
            if !self.device_exists(user, device_id)? {
                return Ok(false);
            }
            self.claim_push_token(user, device_id, &p.token).await?;
        }
        self.write_push_token(user, device_id, push, replacing)
            .await
    }

    fn device_exists(&self, user: u64, device_id: &str) -> Result<bool> {
        let shard = self.shard(self.inner.map.user(user));
        Ok(shard.userdevice_device.contains_key(key(user, device_id))?)
    }

    /// Makes `user`'s `device_id` the one holder of push token `token`: a device
    /// that held it before (another user's, after the phone changed hands without a
    /// logout) gives it up, so that nobody's pushes reach someone else's phone.
    async fn claim_push_token(&self, user: u64, device_id: &str, token: &str) -> Result<()> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let index = self.inner.map.token_hash(&hash);
        if let Some(holder) = self.shard(index).pushtoken_device.get(hash)? {
            if holder.len() < 8 {
                return Err(StorageError::Corrupt("push token holder"));
            }
            let held_by = u64::from_be_bytes(holder[..8].try_into().expect("8 bytes"));
            let held_on = String::from_utf8(holder[8..].to_vec())
                .map_err(|_| StorageError::Corrupt("push token holder"))?;
            if (held_by, held_on.as_str()) != (user, device_id) {
                self.write_push_token(held_by, &held_on, None, Some(token))
                    .await?;
            }
        }
        let mut value = user.to_be_bytes().to_vec();
        value.extend_from_slice(device_id.as_bytes());
        let op = Op::Put {
            shard: index as u16,
            tree: Tree::PushToken,
            key: hash.to_vec(),
            value,
        };
        self.run_ops::<()>(index, OpsRequest::decided(vec![op]))
            .await
            .map(drop)
    }

    async fn write_push_token(
        &self,
        user: u64,
        device_id: &str,
        push: Option<PushToken>,
        replacing: Option<&str>,
    ) -> Result<bool> {
        let _guard = self.device_lock(user).lock().await;
        let shard = self.inner.map.user(user);
        let k = key(user, device_id);
        let Some(v) = self.shard(shard).userdevice_device.get(&k)? else {
            return Ok(false);
        };
        let mut device = decode(device_id.to_owned(), &v)?;
        if replacing.is_some() && device.push.as_ref().map(|p| p.token.as_str()) != replacing {
            return Ok(false);
        }
        if device.push == push {
            return Ok(true);
        }
        device.push = push;
        let op = Op::Put {
            shard: shard as u16,
            tree: Tree::Device,
            key: k,
            value: encode(&device),
        };
        self.run_ops::<()>(shard, OpsRequest::decided(vec![op]))
            .await?;
        Ok(true)
    }

    /// Removes a binding, durably; returns it (with the tokens it used), if it
    /// existed. Call from a blocking thread.
    pub fn unbind_device(&self, user: u64, device_id: &str) -> Result<Option<Device>> {
        let _guard = self.device_lock(user).blocking_lock();
        let index = self.inner.map.user(user);
        let k = key(user, device_id);
        let Some(old) = self.shard(index).userdevice_device.get(&k)? else {
            return Ok(None);
        };
        let op = Op::Delete {
            shard: index as u16,
            tree: Tree::Device,
            key: k,
        };
        self.run_ops_blocking::<()>(index, OpsRequest::decided(vec![op]))?;
        decode(device_id.to_owned(), &old).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn bind_list_unbind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let rt = runtime();
        rt.block_on(s.bind_device(1, "phone", 1, 10, Some(&[1; 32])))
            .unwrap();
        rt.block_on(s.bind_device(1, "laptop", 4, 20, None))
            .unwrap();
        let again = rt
            .block_on(s.bind_device(1, "phone", 1, 30, Some(&[1; 32])))
            .unwrap();
        assert_eq!(
            (again.device.first_seen_ms, again.device.last_seen_ms),
            (10, 30)
        );
        assert_eq!(again.device.tokens, vec![[1; 32]]);
        let ids: Vec<String> = s
            .devices(1)
            .unwrap()
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert_eq!(ids, vec!["laptop", "phone"]);
        assert!(s.unbind_device(1, "laptop").unwrap().is_some());
        assert!(s.unbind_device(1, "laptop").unwrap().is_none());
        let phone = s.unbind_device(1, "phone").unwrap().unwrap();
        assert_eq!(phone.tokens, vec![[1; 32]]);
        assert!(s.devices(2).unwrap().is_empty());
    }

    #[test]
    fn a_device_keeps_its_newest_tokens_and_gives_up_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let rt = runtime();
        for t in 0..MAX_DEVICE_TOKENS as u8 {
            let bound = rt
                .block_on(s.bind_device(1, "phone", 1, 10, Some(&[t; 32])))
                .unwrap();
            assert_eq!(bound.evicted, None);
        }
        let bound = rt
            .block_on(s.bind_device(1, "phone", 1, 11, Some(&[99; 32])))
            .unwrap();
        assert_eq!(bound.evicted, Some([0; 32]));
        assert_eq!(bound.device.tokens.len(), MAX_DEVICE_TOKENS);
        assert_eq!(bound.device.tokens.last(), Some(&[99; 32]));
    }

    #[test]
    fn push_registrations_survive_logins_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let rt = runtime();
        let push = PushToken {
            provider: PushProvider::Apns,
            token: "ab".repeat(32),
            app_id: "com.example.chat".into(),
            sandbox: true,
            credential: [7; 32],
            credential_expires_ms: 0,
            registered_ms: 5,
        };
        assert!(!rt
            .block_on(s.set_push_token(1, "phone", Some(push.clone()), None))
            .unwrap());
        rt.block_on(s.bind_device(1, "phone", 1, 10, Some(&[1; 32])))
            .unwrap();
        assert!(rt
            .block_on(s.set_push_token(1, "phone", Some(push.clone()), None))
            .unwrap());
        rt.block_on(s.bind_device(1, "phone", 1, 20, Some(&[2; 32])))
            .unwrap();
        assert_eq!(s.devices(1).unwrap()[0].push.as_ref(), Some(&push));
        assert!(!rt
            .block_on(s.set_push_token(1, "phone", None, Some("other")))
            .unwrap());
        assert!(rt
            .block_on(s.set_push_token(1, "phone", None, Some(&push.token)))
            .unwrap());
        let d = s.devices(1).unwrap().remove(0);
        assert_eq!((&d.push, d.tokens.len()), (&None, 2));
        let with_push = Device {
            push: Some(push),
            ..d.clone()
        };
        let bytes = encode(&with_push);
        assert_eq!(decode("phone".into(), &bytes).unwrap(), with_push);
        assert!(decode("phone".into(), &bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_push_token_has_one_holder() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        let rt = runtime();
        let push = |credential: u8| PushToken {
            provider: PushProvider::Fcm,
            token: "shared-token".into(),
            app_id: "project".into(),
            sandbox: false,
            credential: [credential; 32],
            credential_expires_ms: 0,
            registered_ms: 1,
        };
        for (user, device) in [(1, "phone"), (2, "phone"), (1, "tablet")] {
            rt.block_on(s.bind_device(user, device, 2, 10, None))
                .unwrap();
        }
        let holders = |s: &Store| {
            let mut out = Vec::new();
            for user in [1, 2] {
                for d in s.devices(user).unwrap() {
                    if d.push.is_some() {
                        out.push((user, d.device_id));
                    }
                }
            }
            out
        };
        assert!(rt
            .block_on(s.set_push_token(1, "phone", Some(push(1)), None))
            .unwrap());
        // The phone changes hands: user 2 registers the same token.
        assert!(rt
            .block_on(s.set_push_token(2, "phone", Some(push(2)), None))
            .unwrap());
        assert_eq!(holders(&s), vec![(2, "phone".to_owned())]);
        assert!(rt
            .block_on(s.set_push_token(1, "tablet", Some(push(1)), None))
            .unwrap());
        assert_eq!(holders(&s), vec![(1, "tablet".to_owned())]);
        // Registering again where it is changes nothing.
        assert!(rt
            .block_on(s.set_push_token(1, "tablet", Some(push(1)), None))
            .unwrap());
        assert_eq!(holders(&s), vec![(1, "tablet".to_owned())]);
        // An unknown device claims nothing.
        assert!(!rt
            .block_on(s.set_push_token(2, "laptop", Some(push(2)), None))
            .unwrap());
        assert_eq!(holders(&s), vec![(1, "tablet".to_owned())]);
    }

    #[test]
    fn records_from_before_tokens_still_read() {
        let mut v1 = vec![DEVICE_V1];
        v1.put_i32(2);
        v1.put_u64(5);
        v1.put_u64(6);
        let d = decode("old".into(), &v1).unwrap();
        assert_eq!((d.platform, d.first_seen_ms, d.last_seen_ms), (2, 5, 6));
        assert!(d.tokens.is_empty());
        assert!(decode("bad".into(), &v1[..10]).is_err());
    }
}
