//! Profiles: what a user shows of itself beside its name and display name — a
//! short status line, a picture (the SHA-256 of an uploaded image), the
//! application's own fields (bounded) and whether it may be found by search. And
//! the search index of display names: in the embedded store one key per user in its
//! shard's `displayname_user` tree (`lowercased name 0x00 user id`), so a prefix
//! search scans each shard's prefix and merges.

use bytes::{Buf, BufMut};

use crate::error::{Result, StorageError};
use crate::Store;

/// Longest status line, in bytes.
pub const MAX_STATUS_BYTES: usize = 140;
/// Most custom fields.
pub const MAX_CUSTOM_FIELDS: usize = 16;
/// Longest custom field name, in bytes (`[A-Za-z0-9_.-]`).
pub const MAX_CUSTOM_KEY_BYTES: usize = 32;
/// Longest custom field value, in bytes.
pub const MAX_CUSTOM_VALUE_BYTES: usize = 256;

const PROFILE_V1: u8 = 1;
const INDEX_BUILT: &[u8] = b"\xffbuilt";

/// A user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// A short status line (empty: none).
    pub status: String,
    /// The SHA-256 of the user's picture (empty: none).
    pub avatar: String,
    /// The application's own fields, by name (sorted, unique).
    pub custom: Vec<(String, String)>,
    /// Whether search finds the user.
    pub discoverable: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            status: String::new(),
            avatar: String::new(),
            custom: Vec::new(),
            discoverable: true,
        }
    }
}

impl Profile {
    /// Checks the limits (every backend refuses the same profiles).
    pub fn validate(&self) -> Result<()> {
        let bad = |why| Err(StorageError::InvalidArgument(why));
        if self.status.len() > MAX_STATUS_BYTES || self.status.chars().any(char::is_control) {
            return bad("a status is at most 140 bytes without control characters");
        }
        let sha256 = self.avatar.len() == 64 && self.avatar.bytes().all(|b| b.is_ascii_hexdigit());
        if !self.avatar.is_empty() && !sha256 {
            return bad("an avatar is the SHA-256 (hex) of an uploaded image");
        }
        if self.custom.len() > MAX_CUSTOM_FIELDS {
            return bad("at most 16 custom fields");
        }
        for (i, (k, v)) in self.custom.iter().enumerate() {
            let key_ok = !k.is_empty()
                && k.len() <= MAX_CUSTOM_KEY_BYTES
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !key_ok {
                return bad("a custom field name is 1..=32 of [A-Za-z0-9_.-]");
            }
            if v.len() > MAX_CUSTOM_VALUE_BYTES || v.chars().any(char::is_control) {
                return bad("a custom field value is at most 256 bytes without control characters");
            }
            if i > 0 && self.custom[i - 1].0 >= *k {
                return bad("custom fields are sorted by name, each once");
            }
        }
        Ok(())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.status.len());
        out.put_u8(PROFILE_V1);
        out.put_u8(u8::from(self.discoverable));
        out.put_u16(self.status.len() as u16);
        out.put_slice(self.status.as_bytes());
        out.put_u8(self.avatar.len() as u8);
        out.put_slice(self.avatar.as_bytes());
        out.put_u8(self.custom.len() as u8);
        for (k, v) in &self.custom {
            out.put_u8(k.len() as u8);
            out.put_slice(k.as_bytes());
            out.put_u16(v.len() as u16);
            out.put_slice(v.as_bytes());
        }
        out
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        let corrupt = || StorageError::Corrupt("profile");
        let mut buf = v;
        let take = |buf: &mut &[u8], n: usize| -> Result<String> {
            if buf.remaining() < n {
                return Err(corrupt());
            }
            let s = std::str::from_utf8(&buf[..n])
                .map_err(|_| corrupt())?
                .to_owned();
            buf.advance(n);
            Ok(s)
        };
        if buf.remaining() < 4 || buf.get_u8() != PROFILE_V1 {
            return Err(corrupt());
        }
        let discoverable = buf.get_u8() != 0;
        let n = usize::from(buf.get_u16());
        let status = take(&mut buf, n)?;
        let n = usize::from(buf.get_u8());
        let avatar = take(&mut buf, n)?;
        if buf.remaining() < 1 {
            return Err(corrupt());
        }
        let count = usize::from(buf.get_u8());
        let mut custom = Vec::with_capacity(count.min(MAX_CUSTOM_FIELDS));
        for _ in 0..count {
            if buf.remaining() < 1 {
                return Err(corrupt());
            }
            let n = usize::from(buf.get_u8());
            let k = take(&mut buf, n)?;
            if buf.remaining() < 2 {
                return Err(corrupt());
            }
            let n = usize::from(buf.get_u16());
            custom.push((k, take(&mut buf, n)?));
        }
        Ok(Self {
            status,
            avatar,
            custom,
            discoverable,
        })
    }
}

/// The search key of a display name: lowercased.
pub fn search_key(name: &str) -> String {
    name.to_lowercase()
}

fn index_key(name: &str, user: u64) -> Vec<u8> {
    let mut k = search_key(name).into_bytes();
    k.push(0);
    k.extend_from_slice(&user.to_be_bytes());
    k
}

impl Store {
    /// Sets `user`'s profile, durably.
    pub fn set_profile(&self, user: u64, profile: &Profile) -> Result<()> {
        profile.validate()?;
        let shard = self.shard(self.inner.map.user(user));
        if !shard.userid_account.contains_key(user.to_be_bytes())? {
            return Err(StorageError::InvalidArgument("no such user"));
        }
        shard
            .userid_profile
            .insert(user.to_be_bytes(), profile.encode())?;
        shard.db.flush()?;
        Ok(())
    }

    /// `user`'s profile (the default when it never set one).
    pub fn profile(&self, user: u64) -> Result<Profile> {
        let shard = self.shard(self.inner.map.user(user));
        shard
            .userid_profile
            .get(user.to_be_bytes())?
            .map_or(Ok(Profile::default()), |v| Profile::decode(&v))
    }

    /// Moves `user`'s entry in the display-name index from `old` to `new`.
    pub(crate) fn reindex_display_name(
        &self,
        user: u64,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<()> {
        let tree = &self.shard(self.inner.map.user(user)).displayname_user;
        if let Some(old) = old {
            tree.remove(index_key(old, user))?;
        }
        if let Some(new) = new {
            tree.insert(index_key(new, user), &[])?;
        }
        Ok(())
    }

    /// Indexes the display names set before the index existed (once per shard).
    pub(crate) fn build_display_name_index(&self) -> Result<()> {
        for index in 0..self.inner.map.count {
            let shard = self.shard(index);
            if shard.displayname_user.contains_key(INDEX_BUILT)? {
                continue;
            }
            for entry in shard.userid_displayname.iter() {
                let (k, v) = entry?;
                let user = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| StorageError::Corrupt("display name key"))?,
                );
                let name =
                    std::str::from_utf8(&v).map_err(|_| StorageError::Corrupt("display name"))?;
                shard.displayname_user.insert(index_key(name, user), &[])?;
            }
            shard.displayname_user.insert(INDEX_BUILT, &[])?;
        }
        Ok(())
    }

    /// Users whose display name starts with `prefix` (case-insensitive), in order
    /// of (lowercased name, id), after `after`, at most `limit`.
    pub fn search_display_names(
        &self,
        prefix: &str,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>> {
        let prefix = search_key(prefix);
        let start = match after {
            Some((name, user)) => {
                let mut k = index_key(name, user);
                k.push(0);
                k
            }
            None => prefix.clone().into_bytes(),
        };
        let mut hits: Vec<(Vec<u8>, u64)> = Vec::new();
        for index in 0..self.inner.map.count {
            let tree = &self.shard(index).displayname_user;
            for k in tree.range(start.clone()..).keys().take(limit) {
                let k = k?;
                if !k.starts_with(prefix.as_bytes()) || k.as_ref() == INDEX_BUILT {
                    break;
                }
                let split = k
                    .len()
                    .checked_sub(9)
                    .ok_or(StorageError::Corrupt("index"))?;
                let user = u64::from_be_bytes(k[split + 1..].try_into().expect("8 bytes"));
                hits.push((k[..split].to_vec(), user));
            }
        }
        hits.sort();
        hits.truncate(limit);
        hits.into_iter()
            .map(|(_, user)| {
                let name = self.display_name(user)?.unwrap_or_default();
                Ok((user, name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_and_limits_hold() {
        let p = Profile {
            status: "on holiday ✈".into(),
            avatar: "ab".repeat(32),
            custom: vec![
                ("city".into(), "Lyon".into()),
                ("team".into(), "blue".into()),
            ],
            discoverable: false,
        };
        p.validate().unwrap();
        assert_eq!(Profile::decode(&p.encode()).unwrap(), p);
        let bad = |f: fn(&mut Profile)| {
            let mut q = p.clone();
            f(&mut q);
            q.validate().is_err()
        };
        assert!(bad(|q| q.status = "x".repeat(141)));
        assert!(bad(|q| q.avatar = "not-hex".into()));
        assert!(bad(|q| q.custom.push(("a b".into(), "v".into()))));
        assert!(bad(|q| q.custom.reverse()));
        assert!(bad(
            |q| q.custom = (0..17).map(|i| (format!("k{i:02}"), "v".into())).collect()
        ));
        assert!(Profile::decode(&p.encode()[..5]).is_err());
    }
}
