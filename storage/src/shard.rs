//! One shard: a sled database with its trees, and the rules for which shard owns what.

use std::path::Path;
use std::time::{Duration, Instant};

use courier_protocol::conversation::mix;
use courier_protocol::ConversationId;

use crate::error::Result;

/// The trees of one shard. Reads go straight here from any thread; message appends
/// go through the shard's writer thread.
#[derive(Clone)]
pub(crate) struct ShardDb {
    pub db: sled::Db,
    /// Messages, idempotency entries and last seqs of the conversations this shard owns.
    pub log: sled::Tree,
    pub userconv_state: sled::Tree,
    pub username_userid: sled::Tree,
    pub userid_account: sled::Tree,
    /// Banned users (by id): when the ban began.
    pub userid_banned: sled::Tree,
    /// Display names (by user id).
    pub userid_displayname: sled::Tree,
    /// `lowercased display name 0x00 user` → (empty): the display-name search index.
    pub displayname_user: sled::Tree,
    /// `user` → its [`crate::Profile`].
    pub userid_profile: sled::Tree,
    pub tokenhash_session: sled::Tree,
    pub usertoken_expiry: sled::Tree,
    pub usergroup_invite: sled::Tree,
    pub groupuser_request: sled::Tree,
    pub userpeer_relation: sled::Tree,
    pub groupid_group: sled::Tree,
    pub groupmember_member: sled::Tree,
    pub userdevice_device: sled::Tree,
    /// Which device holds a push token (by the token's SHA-256): the one holder.
    pub pushtoken_device: sled::Tree,
    pub sha_blob: sled::Tree,
    pub shauser_owner: sled::Tree,
}

/// How long an open waits for sled's file lock. sled lets go of it when the last of
/// its background threads drops a closed database, which can be a moment after the
/// `Db` itself is dropped (a store closed and opened again in one process, under
/// load); past this the lock is another process's, and the error stands.
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl ShardDb {
    pub fn open(path: &Path, cache_bytes: u64, flush_every_ms: Option<u64>) -> Result<Self> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // Messages are durable in the commit log before they reach sled; the
            // timer and the checkpoints only bound how much of the log is replayed.
            .flush_every_ms(flush_every_ms);
        let started = Instant::now();
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self {
            log: db.open_tree("log")?,
            userconv_state: db.open_tree("userconv_state")?,
            username_userid: db.open_tree("username_userid")?,
            userid_account: db.open_tree("userid_account")?,
            userid_banned: db.open_tree("userid_banned")?,
            userid_displayname: db.open_tree("userid_displayname")?,
            displayname_user: db.open_tree("displayname_user")?,
            userid_profile: db.open_tree("userid_profile")?,
            tokenhash_session: db.open_tree("tokenhash_session")?,
            usertoken_expiry: db.open_tree("usertoken_expiry")?,
            usergroup_invite: db.open_tree("usergroup_invite")?,
            groupuser_request: db.open_tree("groupuser_request")?,
            userpeer_relation: db.open_tree("userpeer_relation")?,
            groupid_group: db.open_tree("groupid_group")?,
            groupmember_member: db.open_tree("groupmember_member")?,
            userdevice_device: db.open_tree("userdevice_device")?,
            pushtoken_device: db.open_tree("pushtoken_device")?,
            sha_blob: db.open_tree("sha_blob")?,
            shauser_owner: db.open_tree("shauser_owner")?,
            db,
        })
    }
}

/// Maps ids to shard indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardMap {
    pub count: usize,
}

impl ShardMap {
    pub fn conversation(&self, c: &ConversationId) -> usize {
        (c.shard_hash() % self.count as u64) as usize
    }

    pub fn user(&self, user: u64) -> usize {
        (mix(user) % self.count as u64) as usize
    }

    pub fn name(&self, name: &str) -> usize {
        (mix(fnv1a(name.as_bytes())) % self.count as u64) as usize
    }

    pub fn token_hash(&self, hash: &[u8; 32]) -> usize {
        let head = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
        (head % self.count as u64) as usize
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
