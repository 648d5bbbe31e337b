//! What one user has removed from its own view of a conversation: single messages
//! ("delete for me") and everything up to a seq ("clear history"; clearing through
//! the newest message deletes the conversation from the user's list until the next
//! message). Nobody else's view changes. Kept in the user's shard (`'H' user conv
//! seq` → (empty) for a hidden message, `'C' user conv` → the cleared seq), written
//! through the user's log like the user's read cursors, so it is durable when
//! acknowledged and whole after a crash.
//!
//! Every change takes the user's next *view version* (`'V' user` → the latest,
//! `'W' user conv` → the conversation's), so a device that syncs with the version
//! it last saw learns which conversations' views changed while it was away, even
//! those without a new message.

use courier_protocol::ConversationId;

use crate::error::{Result, StorageError};
use crate::keys::{self, CONV_LEN};
use crate::ops::{Op, Tree};
use crate::writer::{OpsRequest, PlanContext, Planned};
use crate::Store;

/// Most messages one request may hide.
pub const MAX_HIDE_AT_ONCE: usize = 100;

const HIDDEN: u8 = b'H';
const CLEARED: u8 = b'C';
const VERSION: u8 = b'V';
const CONV_VERSION: u8 = b'W';

/// A user's view of one conversation: what it cleared and hid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HiddenView {
    /// Everything up to this seq is cleared for the user (0: nothing).
    pub cleared_seq: u64,
    /// Single messages above `cleared_seq` the user hid, ascending (the newest
    /// ones, up to the limit asked for).
    pub hidden: Vec<u64>,
    /// The user's view version of the last change to this conversation's view.
    pub version: u64,
}

fn user_conv(prefix: u8, user: u64, c: &ConversationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 + CONV_LEN + 8);
    k.push(prefix);
    k.extend_from_slice(&user.to_be_bytes());
    k.extend_from_slice(&keys::conv(c));
    k
}

fn hidden_key(user: u64, c: &ConversationId, seq: u64) -> Vec<u8> {
    let mut k = user_conv(HIDDEN, user, c);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn read_u64(log: &sled::Tree, key: &[u8]) -> Result<u64> {
    Ok(match log.get(key)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StorageError::Corrupt("view value"))?,
        ),
        None => 0,
    })
}

fn cleared(log: &sled::Tree, user: u64, c: &ConversationId) -> Result<u64> {
    read_u64(log, &user_conv(CLEARED, user, c))
}

fn version_key(user: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = VERSION;
    k[1..].copy_from_slice(&user.to_be_bytes());
    k
}

/// The latest view version of `user` (0: never changed).
pub(crate) fn user_version(log: &sled::Tree, user: u64) -> Result<u64> {
    read_u64(log, &version_key(user))
}

/// The conversations whose view `user` changed after version `after`.
pub(crate) fn changed_since(
    log: &sled::Tree,
    user: u64,
    after: u64,
) -> Result<Vec<ConversationId>> {
    let mut prefix = vec![CONV_VERSION];
    prefix.extend_from_slice(&user.to_be_bytes());
    let mut out = Vec::new();
    for entry in log.scan_prefix(&prefix) {
        let (k, v) = entry?;
        let version = u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StorageError::Corrupt("view version"))?,
        );
        if version > after {
            let c = keys::parse_conv(&k[prefix.len()..])
                .ok_or(StorageError::Corrupt("view version key"))?;
            out.push(c);
        }
    }
    Ok(out)
}

fn seq_of(k: &[u8]) -> Result<u64> {
    k.get(1 + 8 + CONV_LEN..)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StorageError::Corrupt("hidden key"))
}

/// `user`'s view of `c`: the cleared seq and the newest `limit` hidden messages.
pub(crate) fn view(
    log: &sled::Tree,
    user: u64,
    c: &ConversationId,
    limit: usize,
) -> Result<HiddenView> {
    let cleared_seq = cleared(log, user, c)?;
    let start = hidden_key(user, c, cleared_seq.saturating_add(1));
    let end = hidden_key(user, c, u64::MAX);
    let mut hidden = Vec::new();
    for k in log.range(start..=end).keys().rev().take(limit) {
        hidden.push(seq_of(&k?)?);
    }
    hidden.reverse();
    Ok(HiddenView {
        cleared_seq,
        hidden,
        version: read_u64(log, &user_conv(CONV_VERSION, user, c))?,
    })
}

/// What to change in `user`'s view of `c`.
enum Change {
    Hide(Vec<u64>),
    Clear(u64),
}

impl Store {
    /// Hides messages `seqs` of `c` from `user` (on all its devices); durable once
    /// it returns. Messages at or below the cleared seq are hidden already.
    pub async fn hide_messages(&self, user: u64, c: &ConversationId, seqs: &[u64]) -> Result<()> {
        if seqs.len() > MAX_HIDE_AT_ONCE {
            return Err(StorageError::InvalidArgument(
                "at most 100 messages may be hidden at once",
            ));
        }
        self.change_view(user, c, Change::Hide(seqs.to_vec()))
            .await
            .map(drop)
    }

    /// Clears `c` for `user` through `seq`; returns the cleared seq in force (it
    /// only moves up). Hidden marks at or below it are dropped.
    pub async fn clear_history(&self, user: u64, c: &ConversationId, seq: u64) -> Result<u64> {
        self.change_view(user, c, Change::Clear(seq)).await
    }

    /// The latest view version of `user`, and the conversations whose view it
    /// changed after version `after`.
    pub fn views_changed_since(&self, user: u64, after: u64) -> Result<(u64, Vec<ConversationId>)> {
        let log = &self.shard(self.inner.map.user(user)).log;
        let latest = user_version(log, user)?;
        if latest <= after {
            return Ok((latest, Vec::new()));
        }
        Ok((latest, changed_since(log, user, after)?))
    }

    /// `user`'s view of `c`: what it cleared and the newest `limit` it hid.
    pub fn hidden_view(&self, user: u64, c: &ConversationId, limit: usize) -> Result<HiddenView> {
        view(&self.shard(self.inner.map.user(user)).log, user, c, limit)
    }

    async fn change_view(&self, user: u64, c: &ConversationId, change: Change) -> Result<u64> {
        let c = *c;
        let shard = self.inner.map.user(user);
        let request = OpsRequest {
            conversation: None,
            // Reads the cleared seq that earlier changes may have moved.
            alone: true,
            plan: Box::new(move |ctx| plan_view(ctx, shard, user, c, change)),
        };
        self.run_ops::<u64>(shard, request).await.map(|(s, _)| s)
    }
}

fn plan_view(
    ctx: &PlanContext<'_>,
    shard: usize,
    user: u64,
    c: ConversationId,
    change: Change,
) -> Result<Planned> {
    let log = &ctx.shards[shard].log;
    let current = cleared(log, user, &c)?;
    let put = |key: Vec<u8>, value: Vec<u8>| Op::Put {
        shard: shard as u16,
        tree: Tree::Log,
        key,
        value,
    };
    let mut ops = Vec::new();
    let in_force = match change {
        Change::Hide(seqs) => {
            for seq in seqs.into_iter().filter(|&s| s > current) {
                ops.push(put(hidden_key(user, &c, seq), Vec::new()));
            }
            current
        }
        Change::Clear(seq) if seq > current => {
            ops.push(put(
                user_conv(CLEARED, user, &c),
                seq.to_be_bytes().to_vec(),
            ));
            let start = hidden_key(user, &c, 0);
            let end = hidden_key(user, &c, seq);
            for k in log.range(start..=end).keys() {
                ops.push(Op::Delete {
                    shard: shard as u16,
                    tree: Tree::Log,
                    key: k?.to_vec(),
                });
            }
            seq
        }
        Change::Clear(_) => current,
    };
    if !ops.is_empty() {
        let version = (user_version(log, user)? + 1).to_be_bytes().to_vec();
        ops.push(put(user_conv(CONV_VERSION, user, &c), version.clone()));
        ops.push(put(version_key(user).to_vec(), version));
    }
    Ok(Planned {
        ops,
        events: Vec::new(),
        membership: None,
        outcome: Box::new(in_force),
    })
}
