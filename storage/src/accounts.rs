//! Accounts: user names and Argon2id password hashes (tokens are in `tokens`).
//!
//! These calls do CPU-heavy hashing and synchronous flushes: call them from a
//! blocking context (`spawn_blocking`), not on an async worker.
//!
//! A login for a name that does not exist verifies the password against a dummy hash
//! made with the same parameters, so it costs what a wrong password costs and its
//! answer is the same: timing does not tell which names exist. User ids are random
//! (below 2^53, so JavaScript numbers hold them exactly), so the directory cannot be
//! walked by counting.

use bytes::{Buf, BufMut};

use crate::credentials::{
    check_password_rules, hash_password, random_user_id, validate_name, verify_password,
    MAX_NAME_BYTES, NO_PASSWORD,
};
use crate::error::{Result, StorageError};
use crate::{now_ms, Store};

const ACCOUNT_V1: u8 = 1;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user id, assigned at registration.
    pub id: u64,
    /// The unique user name.
    pub name: String,
    /// When the account was created (ms since the Unix epoch).
    pub created_ms: u64,
}

/// A login session: the token to hand the client and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token (hex); shown once, stored only as a hash.
    pub token: String,
    /// The user it authenticates.
    pub user_id: u64,
    /// When it stops being valid (ms since the Unix epoch).
    pub expires_ms: u64,
}

impl Store {
    /// Creates an account. Names are 1 to 32 characters of `a-z`, `0-9`, `_`, `-`, `.`.
    pub fn register(&self, name: &str, password: &str) -> Result<Account> {
        validate_name(name)?;
        check_password_rules(password)?;
        let name_shard = self.shard(self.inner.map.name(name));
        if name_shard.username_userid.contains_key(name)? {
            return Err(StorageError::NameTaken);
        }
        let hash = hash_password(self.inner.config.password, password)?;
        self.create_account(name, &hash)
    }

    /// The passwordless account `name` of a user the application vouches for,
    /// created on first use; `NameTaken` if a password account has the name.
    pub fn external_account(&self, name: &str) -> Result<Account> {
        validate_name(name)?;
        loop {
            if let Some((account, hash)) = self.account_with_hash_by_name(name)? {
                return match hash == NO_PASSWORD {
                    true => Ok(account),
                    false => Err(StorageError::NameTaken),
                };
            }
            match self.create_account(name, NO_PASSWORD) {
                // Another first use of the same name won the race: take its account.
                Err(StorageError::NameTaken) => continue,
                created => return created,
            }
        }
    }

    /// Creates account `name` with password hash `hash` (durably); `NameTaken` if
    /// the name is claimed first by someone else.
    fn create_account(&self, name: &str, hash: &str) -> Result<Account> {
        let name_shard = self.shard(self.inner.map.name(name));
        let created_ms = now_ms();
        // A random id (never 0, which means "nobody"), claimed atomically.
        let (account, user_shard) = loop {
            let id = random_user_id();
            let account = Account {
                id,
                name: name.to_owned(),
                created_ms,
            };
            let user_shard = self.shard(self.inner.map.user(id));
            let claimed = user_shard.userid_account.compare_and_swap(
                id.to_be_bytes(),
                None as Option<&[u8]>,
                Some(encode_account(&account, hash)),
            )?;
            if claimed.is_ok() {
                break (account, user_shard);
            }
        };
        let id = account.id;
        user_shard.db.flush()?;
        // The name is claimed last and atomically: of two racing registrations one wins.
        let claimed = name_shard.username_userid.compare_and_swap(
            name,
            None as Option<&[u8]>,
            Some(&id.to_be_bytes()[..]),
        )?;
        if claimed.is_err() {
            user_shard.userid_account.remove(id.to_be_bytes())?;
            return Err(StorageError::NameTaken);
        }
        name_shard.db.flush()?;
        Ok(account)
    }

    /// Checks a password and issues a new token.
    pub fn login(&self, name: &str, password: &str) -> Result<Session> {
        let account = self.check_password(name, password)?;
        self.issue_token(account.id)
    }

    /// The account `name` names, if `password` is its password. Unknown names cost
    /// the same as wrong passwords and fail the same way.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Account> {
        let found = self.account_with_hash_by_name(name)?;
        let hash = match &found {
            Some((_, hash)) => hash.as_str(),
            None => self.inner.dummy_hash.get(self.inner.config.password)?,
        };
        let verified = match hash {
            // Costs what a real check costs, then fails like one.
            NO_PASSWORD => {
                verify_password(
                    self.inner.dummy_hash.get(self.inner.config.password)?,
                    password,
                )?;
                false
            }
            hash => verify_password(hash, password)?,
        };
        match found {
            Some((account, _)) if verified => Ok(account),
            _ => Err(StorageError::BadCredentials),
        }
    }

    /// Sets a new password for `user` (the caller has checked the old one).
    pub fn set_password(&self, user: u64, password: &str) -> Result<()> {
        check_password_rules(password)?;
        let hash = hash_password(self.inner.config.password, password)?;
        let shard = self.shard(self.inner.map.user(user));
        let Some(old) = shard.userid_account.get(user.to_be_bytes())? else {
            return Err(StorageError::BadCredentials);
        };
        let (account, _) = decode_account(user, &old)?;
        shard
            .userid_account
            .insert(user.to_be_bytes(), encode_account(&account, &hash))?;
        shard.db.flush()?;
        Ok(())
    }

    /// Bans or unbans `user` (durably).
    pub fn set_banned(&self, user: u64, banned: bool) -> Result<()> {
        let shard = self.shard(self.inner.map.user(user));
        if !shard.userid_account.contains_key(user.to_be_bytes())? {
            return Err(StorageError::InvalidArgument("no such user"));
        }
        match banned {
            true => shard
                .userid_banned
                .insert(user.to_be_bytes(), &now_ms().to_be_bytes())?,
            false => shard.userid_banned.remove(user.to_be_bytes())?,
        };
        shard.db.flush()?;
        Ok(())
    }

    /// Sets (or with `None` clears) `user`'s display name, durably.
    pub fn set_display_name(&self, user: u64, name: Option<&str>) -> Result<()> {
        let shard = self.shard(self.inner.map.user(user));
        if !shard.userid_account.contains_key(user.to_be_bytes())? {
            return Err(StorageError::InvalidArgument("no such user"));
        }
        let old = match name {
            Some(n) if !crate::credentials::valid_display_name(n) => {
                return Err(StorageError::InvalidArgument("display name"))
            }
            Some(n) => shard
                .userid_displayname
                .insert(user.to_be_bytes(), n.as_bytes())?,
            None => shard.userid_displayname.remove(user.to_be_bytes())?,
        };
        let old = old.map(|v| String::from_utf8_lossy(&v).into_owned());
        self.reindex_display_name(user, old.as_deref(), name)?;
        shard.db.flush()?;
        Ok(())
    }

    /// `user`'s display name, if set.
    pub fn display_name(&self, user: u64) -> Result<Option<String>> {
        let shard = self.shard(self.inner.map.user(user));
        shard
            .userid_displayname
            .get(user.to_be_bytes())?
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|_| StorageError::Corrupt("display name"))
            })
            .transpose()
    }

    /// Whether `user` is banned.
    pub fn is_banned(&self, user: u64) -> Result<bool> {
        let shard = self.shard(self.inner.map.user(user));
        Ok(shard.userid_banned.contains_key(user.to_be_bytes())?)
    }

    /// The account with this id.
    pub fn account(&self, id: u64) -> Result<Option<Account>> {
        let shard = self.shard(self.inner.map.user(id));
        match shard.userid_account.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(decode_account(id, &v)?.0)),
            None => Ok(None),
        }
    }

    /// The account with this name.
    pub fn account_by_name(&self, name: &str) -> Result<Option<Account>> {
        Ok(self.account_with_hash_by_name(name)?.map(|(a, _)| a))
    }

    fn account_with_hash_by_name(&self, name: &str) -> Result<Option<(Account, String)>> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Ok(None);
        }
        let name_shard = self.shard(self.inner.map.name(name));
        let Some(id) = name_shard.username_userid.get(name)? else {
            return Ok(None);
        };
        let id = crate::writer::decode_u64(&id).ok_or(StorageError::Corrupt("user id"))?;
        let shard = self.shard(self.inner.map.user(id));
        match shard.userid_account.get(id.to_be_bytes())? {
            Some(v) => Ok(Some(decode_account(id, &v)?)),
            None => Ok(None),
        }
    }
}

fn encode_account(a: &Account, hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + a.name.len() + hash.len());
    out.put_u8(ACCOUNT_V1);
    out.put_u64(a.created_ms);
    out.put_u8(a.name.len() as u8);
    out.put_slice(a.name.as_bytes());
    out.put_slice(hash.as_bytes());
    out
}

fn decode_account(id: u64, v: &[u8]) -> Result<(Account, String)> {
    let corrupt = || StorageError::Corrupt("account");
    let mut buf = v;
    if buf.remaining() < 10 || buf.get_u8() != ACCOUNT_V1 {
        return Err(corrupt());
    }
    let created_ms = buf.get_u64();
    let len = buf.get_u8() as usize;
    if buf.remaining() < len {
        return Err(corrupt());
    }
    let name = std::str::from_utf8(&buf[..len])
        .map_err(|_| corrupt())?
        .to_owned();
    let hash = std::str::from_utf8(&buf[len..])
        .map_err(|_| corrupt())?
        .to_owned();
    Ok((
        Account {
            id,
            name,
            created_ms,
        },
        hash,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
        (dir, store)
    }

    #[test]
    fn register_login_verify() {
        let (_dir, store) = store();
        let alice = store.register("alice", "correct horse").unwrap();
        assert!(alice.id >= 1);
        assert!(matches!(
            store.register("alice", "another one"),
            Err(StorageError::NameTaken)
        ));
        assert!(matches!(
            store.login("alice", "wrong password"),
            Err(StorageError::BadCredentials)
        ));
        assert!(matches!(
            store.login("nobody", "whatever1"),
            Err(StorageError::BadCredentials)
        ));
        let session = store.login("alice", "correct horse").unwrap();
        assert_eq!(store.verify_token(&session.token).unwrap(), Some(alice.id));
        assert_eq!(store.verify_token(&"0".repeat(64)).unwrap(), None);
        assert_eq!(store.verify_token("short").unwrap(), None);
        store.revoke_token(&session.token).unwrap();
        assert_eq!(store.verify_token(&session.token).unwrap(), None);
        assert_eq!(store.account_by_name("alice").unwrap(), Some(alice.clone()));
        assert_eq!(store.account(alice.id).unwrap(), Some(alice));
    }

    #[test]
    fn names_and_passwords_are_checked() {
        let (_dir, store) = store();
        for bad in ["", "Alice", "a b", "x".repeat(33).as_str(), "ünï"] {
            assert!(
                matches!(
                    store.register(bad, "long enough"),
                    Err(StorageError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store.register("bob", "short"),
            Err(StorageError::InvalidPassword(_))
        ));
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::for_tests(dir.path());
        config.token_ttl = std::time::Duration::ZERO;
        let store = Store::open(config, None).unwrap();
        let user = store.register("carol", "password1").unwrap();
        let session = store.issue_token(user.id).unwrap();
        assert_eq!(store.verify_token(&session.token).unwrap(), None);
    }
}
