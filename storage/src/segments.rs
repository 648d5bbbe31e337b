//! Messages live in the commit log; this module finds them there.
//!
//! A shard's log segments are kept after their checkpoint: they are the message
//! store. sled holds no entry per message, only what grows with conversations and
//! users, so that neither sled's memory nor its disk grows with the message count:
//!
//! - The segment that appends go to is indexed in memory ([`SegmentIndex`]): per
//!   conversation, runs of consecutive seqs and where each message lies. Its size is
//!   bounded by the segment's.
//! - When a segment closes it is *sealed*: its index is written beside it
//!   (`<start>.idx`: the runs, one 8-byte location per message, and the idempotency
//!   table of its sends, sorted by hash), and each run goes into sled as one entry
//!   (`'R' conv first_seq` → segment, last seq, position in the index file), with a
//!   marker (`'S' segment`) in the same atomic batch. A lookup is a sled range read
//!   for the run, one `pread` of the index file for the location (a whole page of
//!   history is one run, one read), one `pread` per record.
//! - A segment closed but not sealed yet (its index file could not be written: a
//!   full disk) stays indexed in memory and is sealed at a later commit; an open
//!   seals every segment of the last run (scanning it) before appends start.
//! - Resends are recognised by an idempotency window ([`IdemWindow`]): the hashes of
//!   the last `idempotency_window` sends of the shard, kept in memory with the
//!   message's location; a hit is confirmed against the stored record.
//! - A recall marks the message (`'x' conv seq`, read with every page) and queues
//!   its physical erasure (`'X' conv seq`): once the record lies before a
//!   checkpoint, its body is overwritten with zeros in place and its checksum
//!   rewritten. Only the body and the checksum change, so a torn erasure leaves the
//!   record's header readable; its checksum then fails, which a read forgives only
//!   where the message is marked recalled, and the erasure is done again.
//! - Retention moves a conversation's floor; a sealed segment whose every run lies
//!   below its conversation's floor, and which lies before the checkpoint, is
//!   deleted ([`Segments::reclaim`]).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use courier_protocol::ConversationId;

use crate::commitlog::{self, Segment, HEADER};
use crate::error::{Result, StorageError};
use crate::keys::{self, CONV_LEN};
use crate::record::{Edited, Recall, StoredMessage};

/// A conversation id as a key part.
pub(crate) type ConvKey = [u8; CONV_LEN];

/// A message's place in its segment: the record's byte offset in the file (high 48
/// bits) and which message of the record it is (low 16 bits: 0 for a message
/// record, `k` for the `k`-th message an operation's record stores).
pub(crate) fn loc(offset: u64, sub: u16) -> u64 {
    (offset << 16) | u64::from(sub)
}

fn loc_offset(loc: u64) -> u64 {
    loc >> 16
}

fn loc_sub(loc: u64) -> u16 {
    loc as u16
}

/// The hash a send is recognised by in the idempotency window.
pub(crate) fn idem_hash(c: &ConversationId, sender: u64, client_msg_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&keys::conv(c));
    eat(&sender.to_be_bytes());
    eat(client_msg_id.as_bytes());
    courier_protocol::conversation::mix(h)
}

// ---- sled keys -------------------------------------------------------------------

const RUN: u8 = b'R';
const SEALED: u8 = b'S';
const HAS_SENT: u8 = b'h';
const RECALLED: u8 = b'x';
const ERASE: u8 = b'X';
const EDITED: u8 = b'e';
const EDIT_EVENT: u8 = b'y';
const MENTIONS: u8 = b'm';
const QUIET: u8 = b'k';

/// `'R' conv first_seq`: a run of a sealed segment.
fn run_key(c: &ConvKey, first_seq: u64) -> [u8; 1 + CONV_LEN + 8] {
    let mut k = [0u8; 1 + CONV_LEN + 8];
    k[0] = RUN;
    k[1..1 + CONV_LEN].copy_from_slice(c);
    k[1 + CONV_LEN..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

fn sealed_key(segment: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = SEALED;
    k[1..].copy_from_slice(&segment.to_be_bytes());
    k
}

/// `'h' conv user`: `user` has sent in `c`.
pub(crate) fn has_sent_key(c: &ConversationId, user: u64) -> [u8; 1 + CONV_LEN + 8] {
    conv_u64_key(HAS_SENT, c, user)
}

/// `'x' conv seq`: message `seq` of `c` was recalled (value: who, when).
pub(crate) fn recalled_key(c: &ConversationId, seq: u64) -> [u8; 1 + CONV_LEN + 8] {
    conv_u64_key(RECALLED, c, seq)
}

/// `'X' conv seq`: message `seq` of `c` awaits its physical erasure.
pub(crate) fn erase_key(c: &ConversationId, seq: u64) -> [u8; 1 + CONV_LEN + 8] {
    conv_u64_key(ERASE, c, seq)
}

/// `'e' conv seq`: message `seq` of `c` was edited ([`EditMark`]).
pub(crate) fn edited_key(c: &ConversationId, seq: u64) -> [u8; 1 + CONV_LEN + 8] {
    conv_u64_key(EDITED, c, seq)
}

/// `'y' conv seq event_seq`: message `event_seq` of `c` is an edit event of `seq`.
pub(crate) fn edit_event_key(c: &ConversationId, seq: u64, event_seq: u64) -> Vec<u8> {
    let mut k = conv_u64_key(EDIT_EVENT, c, seq).to_vec();
    k.extend_from_slice(&event_seq.to_be_bytes());
    k
}

/// The edit events of message `seq` of `c`, oldest first.
pub(crate) fn edit_events(log: &sled::Tree, c: &ConversationId, seq: u64) -> Result<Vec<u64>> {
    let prefix = conv_u64_key(EDIT_EVENT, c, seq);
    log.scan_prefix(prefix)
        .keys()
        .map(|k| {
            let k = k?;
            k.get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StorageError::Corrupt("edit event key"))
        })
        .collect()
}

/// `'m' conv seq` → the users message `seq` mentions: the index entry of a message
/// that mentions anyone. An edit event's mentions are its target's (see
/// [`edited_mentions`]), never its own.
pub(crate) fn mention_entry(m: &StoredMessage) -> Option<([u8; 1 + CONV_LEN + 8], Vec<u8>)> {
    if m.mentions.is_empty() {
        return None;
    }
    let ids = m.mentions.iter().flat_map(|u| u.to_be_bytes()).collect();
    Some((conv_u64_key(MENTIONS, &m.conversation, m.seq), ids))
}

/// The mention entry of message `target` after an edit whose event is `event`: the
/// users the new text mentions (an empty entry, counted for nobody, when none).
pub(crate) fn edited_mentions(
    event: &StoredMessage,
    target: u64,
) -> ([u8; 1 + CONV_LEN + 8], Vec<u8>) {
    let ids = event
        .mentions
        .iter()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    (conv_u64_key(MENTIONS, &event.conversation, target), ids)
}

/// `'k' conv seq`: event `seq` changes other messages (an edit, reactions) and
/// counts in nobody's unread number.
pub(crate) fn quiet_key(c: &ConversationId, seq: u64) -> [u8; 1 + CONV_LEN + 8] {
    conv_u64_key(QUIET, c, seq)
}

/// How many of `c`'s events above `after` count in nobody's unread number.
pub(crate) fn quiet_count(log: &sled::Tree, c: &ConversationId, after: u64) -> Result<u64> {
    let start = conv_u64_key(QUIET, c, after.saturating_add(1));
    let end = conv_u64_key(QUIET, c, u64::MAX);
    let mut count = 0;
    for k in log.range(start..=end).keys() {
        k?;
        count += 1;
    }
    Ok(count)
}

/// How many of `c`'s messages above `after` mention `user` (by name or all), not
/// counting recalled ones.
pub(crate) fn mention_count(
    log: &sled::Tree,
    c: &ConversationId,
    user: u64,
    after: u64,
) -> Result<u64> {
    let mut count = 0;
    let start = conv_u64_key(MENTIONS, c, after.saturating_add(1));
    let end = conv_u64_key(MENTIONS, c, u64::MAX);
    for entry in log.range(start..=end) {
        let (k, v) = entry?;
        let names = v
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .any(|u| u == user || u == crate::MENTION_ALL);
        let seq = key_u64(&k).ok_or(StorageError::Corrupt("mention key"))?;
        if names && !log.contains_key(recalled_key(c, seq))? {
            count += 1;
        }
    }
    Ok(count)
}

/// What the `'e'` mark of an edited message says: who edited it last, when, how
/// often, and where the latest edit event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EditMark {
    pub by_user: u64,
    pub at_ms: u64,
    pub count: u32,
    pub event_seq: u64,
}

impl EditMark {
    pub fn encode(&self) -> [u8; 28] {
        let mut out = [0u8; 28];
        out[..8].copy_from_slice(&self.by_user.to_be_bytes());
        out[8..16].copy_from_slice(&self.at_ms.to_be_bytes());
        out[16..20].copy_from_slice(&self.count.to_be_bytes());
        out[20..].copy_from_slice(&self.event_seq.to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Option<Self> {
        Some(Self {
            by_user: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            at_ms: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
            count: u32::from_be_bytes(v.get(16..20)?.try_into().ok()?),
            event_seq: u64::from_be_bytes(v.get(20..28)?.try_into().ok()?),
        })
    }

    /// The mark of message `seq` of `c`, if it was edited.
    pub fn read(log: &sled::Tree, c: &ConversationId, seq: u64) -> Result<Option<Self>> {
        log.get(edited_key(c, seq))?
            .map(|v| Self::decode(&v).ok_or(StorageError::Corrupt("edit mark")))
            .transpose()
    }
}

fn edit_marks(
    log: &sled::Tree,
    c: &ConversationId,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, EditMark>> {
    let mut out = HashMap::new();
    for entry in log.range(edited_key(c, from)..=edited_key(c, to)) {
        let (k, v) = entry?;
        let seq = key_u64(&k).ok_or(StorageError::Corrupt("edit key"))?;
        out.insert(
            seq,
            EditMark::decode(&v).ok_or(StorageError::Corrupt("edit mark"))?,
        );
    }
    Ok(out)
}

fn conv_u64_key(prefix: u8, c: &ConversationId, n: u64) -> [u8; 1 + CONV_LEN + 8] {
    let mut k = [0u8; 1 + CONV_LEN + 8];
    k[0] = prefix;
    k[1..1 + CONV_LEN].copy_from_slice(&keys::conv(c));
    k[1 + CONV_LEN..].copy_from_slice(&n.to_be_bytes());
    k
}

fn key_u64(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.get(1 + CONV_LEN..)?.try_into().ok()?,
    ))
}

/// The stored form of a recall mark.
pub(crate) fn encode_recall(r: &Recall) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&r.by_user.to_be_bytes());
    out[8..].copy_from_slice(&r.at_ms.to_be_bytes());
    out
}

fn decode_recall(v: &[u8]) -> Option<Recall> {
    Some(Recall {
        by_user: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        at_ms: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
    })
}

/// The recall marks of `c`'s messages `from..=to`.
pub(crate) fn recalls(
    log: &sled::Tree,
    c: &ConversationId,
    from: u64,
    to: u64,
) -> Result<HashMap<u64, Recall>> {
    let mut out = HashMap::new();
    for entry in log.range(recalled_key(c, from)..=recalled_key(c, to)) {
        let (k, v) = entry?;
        let seq = key_u64(&k).ok_or(StorageError::Corrupt("recall key"))?;
        out.insert(
            seq,
            decode_recall(&v).ok_or(StorageError::Corrupt("recall mark"))?,
        );
    }
    Ok(out)
}

// ---- one segment's index -----------------------------------------------------------

/// Consecutive seqs of one conversation in one segment, and where each lies.
#[derive(Debug, Default)]
struct Run {
    first_seq: u64,
    locs: Vec<u64>,
}

/// The index of one segment: per conversation, its runs.
#[derive(Debug, Default)]
pub(crate) struct SegmentIndex {
    runs: HashMap<ConvKey, Vec<Run>>,
}

/// A run as the index file and sled hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunEntry {
    conv: ConvKey,
    first_seq: u64,
    last_seq: u64,
    /// Index of its first location in the file's location table.
    loc_pos: u32,
}

impl SegmentIndex {
    /// Message `seq` of `conv` lies at `loc`. Seqs of a conversation arrive in
    /// order; a seq seen already (never in a sound log) keeps its first place.
    pub fn add(&mut self, conv: ConvKey, seq: u64, loc: u64) {
        let runs = self.runs.entry(conv).or_default();
        if let Some(run) = runs.last_mut() {
            let next = run.first_seq + run.locs.len() as u64;
            if seq == next {
                run.locs.push(loc);
                return;
            }
            if seq < next {
                return;
            }
        }
        runs.push(Run {
            first_seq: seq,
            locs: vec![loc],
        });
    }

    fn get(&self, conv: &ConvKey, seq: u64) -> Option<u64> {
        let run = self
            .runs
            .get(conv)?
            .iter()
            .rev()
            .find(|r| r.first_seq <= seq)?;
        run.locs.get((seq - run.first_seq) as usize).copied()
    }

    /// The runs sorted by conversation and seq, and their locations in that order.
    fn table(&self) -> (Vec<RunEntry>, Vec<u64>) {
        let mut convs: Vec<&ConvKey> = self.runs.keys().collect();
        convs.sort_unstable();
        let mut entries = Vec::new();
        let mut locs = Vec::new();
        for conv in convs {
            for run in &self.runs[conv] {
                entries.push(RunEntry {
                    conv: *conv,
                    first_seq: run.first_seq,
                    last_seq: run.first_seq + run.locs.len() as u64 - 1,
                    loc_pos: locs.len() as u32,
                });
                locs.extend_from_slice(&run.locs);
            }
        }
        (entries, locs)
    }
}

// ---- index files ---------------------------------------------------------------------

const IDX_MAGIC: &[u8; 4] = b"CIX1";
const IDX_HEAD: u64 = 16;
const RUN_BYTES: usize = CONV_LEN + 8 + 8 + 4;

fn idx_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.idx"))
}

/// Writes the index file of `segment` (durably, under its final name only once whole).
fn write_idx(
    dir: &Path,
    segment: u64,
    runs: &[RunEntry],
    locs: &[u64],
    idem: &[(u64, u64)],
) -> Result<()> {
    let mut out = Vec::with_capacity(
        IDX_HEAD as usize + runs.len() * RUN_BYTES + locs.len() * 8 + idem.len() * 16 + 4,
    );
    out.extend_from_slice(IDX_MAGIC);
    for n in [runs.len(), locs.len(), idem.len()] {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for r in runs {
        out.extend_from_slice(&r.conv);
        out.extend_from_slice(&r.first_seq.to_le_bytes());
        out.extend_from_slice(&r.last_seq.to_le_bytes());
        out.extend_from_slice(&r.loc_pos.to_le_bytes());
    }
    for l in locs {
        out.extend_from_slice(&l.to_le_bytes());
    }
    for (h, l) in idem {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&l.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let path = idx_path(dir, segment);
    let tmp = path.with_extension("idx.tmp");
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &out)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// An open index file.
struct IdxFile {
    file: File,
    runs: u64,
    locs: u64,
    idem: u64,
}

impl IdxFile {
    /// Opens `segment`'s index file; `None` when it is missing or not whole.
    fn open(dir: &Path, segment: u64) -> Result<Option<Self>> {
        let file = match File::open(idx_path(dir, segment)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let mut head = [0u8; IDX_HEAD as usize];
        if len < IDX_HEAD || file.read_exact_at(&mut head, 0).is_err() || &head[..4] != IDX_MAGIC {
            return Ok(None);
        }
        let n = |i: usize| u64::from(u32::from_le_bytes(head[i..i + 4].try_into().expect("4")));
        let idx = Self {
            file,
            runs: n(4),
            locs: n(8),
            idem: n(12),
        };
        let expected = IDX_HEAD + idx.runs * RUN_BYTES as u64 + idx.locs * 8 + idx.idem * 16 + 4;
        Ok((len == expected).then_some(idx))
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }

    fn locs(&self, pos: u64, count: u64) -> Result<Vec<u64>> {
        if pos + count > self.locs {
            return Err(StorageError::Corrupt("index file: location out of range"));
        }
        let at = IDX_HEAD + self.runs * RUN_BYTES as u64 + pos * 8;
        Ok(self
            .read(at, count as usize * 8)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
            .collect())
    }

    fn runs(&self) -> Result<Vec<RunEntry>> {
        let bytes = self.read(IDX_HEAD, self.runs as usize * RUN_BYTES)?;
        Ok(bytes
            .chunks_exact(RUN_BYTES)
            .map(|r| RunEntry {
                conv: r[..CONV_LEN].try_into().expect("conv"),
                first_seq: u64::from_le_bytes(r[CONV_LEN..CONV_LEN + 8].try_into().expect("8")),
                last_seq: u64::from_le_bytes(r[CONV_LEN + 8..CONV_LEN + 16].try_into().expect("8")),
                loc_pos: u32::from_le_bytes(r[CONV_LEN + 16..].try_into().expect("4")),
            })
            .collect())
    }

    fn idem(&self) -> Result<Vec<(u64, u64)>> {
        let at = IDX_HEAD + self.runs * RUN_BYTES as u64 + self.locs * 8;
        Ok(self
            .read(at, self.idem as usize * 16)?
            .chunks_exact(16)
            .map(|c| {
                (
                    u64::from_le_bytes(c[..8].try_into().expect("8")),
                    u64::from_le_bytes(c[8..].try_into().expect("8")),
                )
            })
            .collect())
    }
}

// ---- the idempotency window ------------------------------------------------------------

/// A segment's sends, `(hash, loc)` sorted by hash.
pub(crate) type IdemTable = Arc<[(u64, u64)]>;

/// The last sends of a shard by hash, with where each message lies: how a writer
/// recognises a resend without an index entry per message. Bounded by count; a
/// resend of a message older than the window is stored again.
pub(crate) struct IdemWindow {
    capacity: usize,
    active_segment: u64,
    active: HashMap<u64, u64>,
    /// Sends of the active segment whose hash another one holds already.
    collisions: Vec<(u64, u64)>,
    /// Closed segments' tables, sorted by hash; oldest first.
    sealed: VecDeque<(u64, IdemTable)>,
    sealed_len: usize,
}

impl IdemWindow {
    pub fn new(capacity: usize, active_segment: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            active_segment,
            active: HashMap::new(),
            collisions: Vec::new(),
            sealed: VecDeque::new(),
            sealed_len: 0,
        }
    }

    /// Where a send with `hash` may lie: `(segment, loc)`, newest first.
    pub fn candidates(&self, hash: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some(&l) = self.active.get(&hash) {
            out.push((self.active_segment, l));
        }
        out.extend(
            self.collisions
                .iter()
                .filter(|(h, _)| *h == hash)
                .map(|&(_, l)| (self.active_segment, l)),
        );
        for (segment, table) in self.sealed.iter().rev() {
            let from = table.partition_point(|(h, _)| *h < hash);
            out.extend(
                table[from..]
                    .iter()
                    .take_while(|(h, _)| *h == hash)
                    .map(|&(_, l)| (*segment, l)),
            );
        }
        out
    }

    pub fn insert(&mut self, hash: u64, loc: u64) {
        if let Some(old) = self.active.insert(hash, loc) {
            self.collisions.push((hash, old));
        }
        self.evict();
    }

    /// The active segment closed; appends go to `next`. Returns its sorted table.
    pub fn close(&mut self, next: u64) -> IdemTable {
        let mut table: Vec<(u64, u64)> = self.active.drain().collect();
        table.append(&mut self.collisions);
        table.sort_unstable();
        let table: IdemTable = table.into();
        self.push_sealed(self.active_segment, table.clone());
        self.active_segment = next;
        table
    }

    /// Adds a closed segment's table (oldest first).
    fn push_sealed(&mut self, segment: u64, table: IdemTable) {
        self.sealed_len += table.len();
        self.sealed.push_back((segment, table));
        self.evict();
    }

    fn evict(&mut self) {
        while self.sealed_len + self.active.len() > self.capacity {
            let Some((_, oldest)) = self.sealed.pop_front() else {
                break;
            };
            self.sealed_len -= oldest.len();
        }
    }

    /// Entries held (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sealed_len + self.active.len() + self.collisions.len()
    }
}

// ---- a shard's segments -----------------------------------------------------------------

/// A closed segment whose index is still only in memory.
struct Unsealed {
    segment: u64,
    index: SegmentIndex,
    idem: IdemTable,
}

struct Live {
    /// The segment appends go to, and its index so far.
    active_segment: u64,
    active: SegmentIndex,
    /// Closed segments not sealed yet, oldest first.
    unsealed: Vec<Unsealed>,
}

impl Live {
    fn get(&self, conv: &ConvKey, seq: u64) -> Option<(u64, u64)> {
        if let Some(l) = self.active.get(conv, seq) {
            return Some((self.active_segment, l));
        }
        self.unsealed
            .iter()
            .rev()
            .find_map(|u| u.index.get(conv, seq).map(|l| (u.segment, l)))
    }
}

/// Most segment and index files the whole store keeps open for reading (the
/// gateway keeps 256 descriptors back from its connection budget for files).
const STORE_OPEN_FILES: usize = 64;

/// One shard's message store: its log segments and their indexes.
pub(crate) struct Segments {
    dir: PathBuf,
    /// Most files of each kind this shard keeps open.
    open_files: usize,
    live: RwLock<Live>,
    logs: Mutex<HashMap<u64, Arc<File>>>,
    idxs: Mutex<HashMap<u64, Arc<IdxFile>>>,
}

/// Where one message lies.
#[derive(Debug, Clone, Copy)]
struct Place {
    seq: u64,
    segment: u64,
    loc: u64,
}

impl Segments {
    /// Indexes the segments `kept` by the log's open (sealing those that are not),
    /// with appends going to the segment at `active_segment`; returns the store and
    /// the shard's idempotency window, filled from the newest segments.
    pub fn open(
        dir: &Path,
        log: &sled::Tree,
        kept: &[Segment],
        active_segment: u64,
        idem_capacity: usize,
        shards: usize,
    ) -> Result<(Self, IdemWindow)> {
        let mut live = Live {
            active_segment,
            active: SegmentIndex::default(),
            unsealed: Vec::new(),
        };
        let mut sealed_tables = Vec::new();
        for segment in kept {
            let sealed = log.contains_key(sealed_key(segment.start))?;
            if sealed && IdxFile::open(dir, segment.start)?.is_some() {
                sealed_tables.push(segment.start);
                continue;
            }
            // Not sealed (the last segments before a restart), or its index file
            // went missing: indexed from its records, sealed below (again: the runs
            // it writes are the same).
            let (index, idem) = scan_segment(&segment.path)?;
            live.unsealed.push(Unsealed {
                segment: segment.start,
                index,
                idem: idem.into(),
            });
        }
        // Markers of segments retention deleted before a crash let it say so.
        let present: std::collections::HashSet<u64> = kept.iter().map(|s| s.start).collect();
        for entry in log.scan_prefix([SEALED]) {
            let (k, _) = entry?;
            let segment = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("sealed segment key"))?,
            );
            if !present.contains(&segment) {
                log.remove(k)?;
            }
        }
        let mut window = IdemWindow::new(idem_capacity, active_segment);
        // Newest first until the window is full, then added oldest first.
        let mut tables: Vec<(u64, IdemTable)> = Vec::new();
        let mut held = 0;
        let mut newest_first: Vec<u64> = kept.iter().map(|s| s.start).collect();
        newest_first.reverse();
        for segment in newest_first {
            if held >= idem_capacity {
                break;
            }
            let table: IdemTable = match live.unsealed.iter().find(|u| u.segment == segment) {
                Some(u) => u.idem.clone(),
                None if sealed_tables.contains(&segment) => match IdxFile::open(dir, segment)? {
                    Some(idx) => idx.idem()?.into(),
                    None => continue,
                },
                None => continue,
            };
            held += table.len();
            tables.push((segment, table));
        }
        for (segment, table) in tables.into_iter().rev() {
            window.push_sealed(segment, table);
        }
        let segments = Self {
            dir: dir.to_owned(),
            open_files: (STORE_OPEN_FILES / (2 * shards.max(1))).max(2),
            live: RwLock::new(live),
            logs: Mutex::new(HashMap::new()),
            idxs: Mutex::new(HashMap::new()),
        };
        segments.seal_pending(log);
        Ok((segments, window))
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    fn live_mut(&self) -> std::sync::RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where the messages of a durable batch lie (all in `segment`): before
    /// the indexes say they exist, so that a reader that sees a seq finds it.
    pub fn add(&self, segment: u64, placed: impl IntoIterator<Item = (ConvKey, u64, u64)>) {
        let mut live = self.live_mut();
        debug_assert_eq!(live.active_segment, segment);
        for (conv, seq, loc) in placed {
            live.active.add(conv, seq, loc);
        }
    }

    /// The active segment closed; appends go to `next`. Seals it (and any segment
    /// still waiting) unless the disk refuses, in which case a later call retries.
    pub fn close(&self, log: &sled::Tree, next: u64, idem: IdemTable) {
        {
            let mut live = self.live_mut();
            let index = std::mem::take(&mut live.active);
            let segment = std::mem::replace(&mut live.active_segment, next);
            live.unsealed.push(Unsealed {
                segment,
                index,
                idem,
            });
        }
        self.seal_pending(log);
    }

    /// Whether closed segments wait to be sealed.
    pub fn has_unsealed(&self) -> bool {
        !self.live().unsealed.is_empty()
    }

    /// Seals the closed segments that wait, oldest first; stops at the first
    /// failure (logged), leaving the rest for a later call.
    pub fn seal_pending(&self, log: &sled::Tree) {
        loop {
            let next = {
                let live = self.live();
                live.unsealed
                    .first()
                    .map(|u| (u.segment, u.index.table(), u.idem.clone()))
            };
            let Some((segment, (runs, locs), idem)) = next else {
                return;
            };
            let sealed = write_idx(&self.dir, segment, &runs, &locs, &idem).and_then(|()| {
                let mut batch = sled::Batch::default();
                for r in &runs {
                    let mut v = [0u8; 20];
                    v[..8].copy_from_slice(&segment.to_be_bytes());
                    v[8..16].copy_from_slice(&r.last_seq.to_be_bytes());
                    v[16..].copy_from_slice(&r.loc_pos.to_be_bytes());
                    batch.insert(&run_key(&r.conv, r.first_seq), &v);
                }
                batch.insert(&sealed_key(segment), &[]);
                // Under the lock: a reader finds the segment's messages either in
                // memory or through sled, never in neither.
                let mut live = self.live_mut();
                log.apply_batch(batch)?;
                live.unsealed.retain(|u| u.segment != segment);
                Ok(())
            });
            if let Err(e) = sealed {
                tracing::warn!(segment, error = %e, "cannot seal a log segment yet; its index stays in memory");
                return;
            }
        }
    }

    /// Where messages `from..=to` of `c` lie, in seq order (seqs not found left out).
    fn locate(
        &self,
        log: &sled::Tree,
        c: &ConversationId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Place>> {
        let conv = keys::conv(c);
        let live = self.live();
        let mut places = Vec::new();
        let mut missing = Vec::new();
        for seq in from..=to {
            match live.get(&conv, seq) {
                Some((segment, loc)) => places.push(Place { seq, segment, loc }),
                None => missing.push(seq),
            }
        }
        if missing.is_empty() {
            return Ok(places);
        }
        let (lo, hi) = (missing[0], missing[missing.len() - 1]);
        // Runs that may hold them, newest first (still under the lock: see
        // `seal_pending`).
        let mut chunks = Vec::new();
        for entry in log.range(run_key(&conv, 0)..=run_key(&conv, hi)).rev() {
            let (k, v) = entry?;
            let first = key_u64(&k).ok_or(StorageError::Corrupt("run key"))?;
            if v.len() != 20 {
                return Err(StorageError::Corrupt("run"));
            }
            let segment = u64::from_be_bytes(v[..8].try_into().expect("8"));
            let last = u64::from_be_bytes(v[8..16].try_into().expect("8"));
            let pos = u64::from(u32::from_be_bytes(v[16..].try_into().expect("4")));
            let (a, b) = (first.max(lo), last.min(hi));
            if a <= b {
                chunks.push((segment, pos + (a - first), a, b));
            }
            if first <= lo {
                break;
            }
        }
        drop(live);
        for (segment, pos, a, b) in chunks {
            let idx = self.idx(segment)?;
            let locs = idx.locs(pos, b - a + 1)?;
            for (i, loc) in locs.into_iter().enumerate() {
                let seq = a + i as u64;
                if missing.binary_search(&seq).is_ok() {
                    places.push(Place { seq, segment, loc });
                }
            }
        }
        places.sort_unstable_by_key(|p| p.seq);
        Ok(places)
    }

    /// Messages `from..=to` of `c` (those stored: retention may have taken some),
    /// oldest first, recalled ones erased, edited ones with their latest edit.
    pub fn read_range(
        &self,
        log: &sled::Tree,
        c: &ConversationId,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredMessage>> {
        if from > to {
            return Ok(Vec::new());
        }
        let places = self.locate(log, c, from, to)?;
        let recalled = recalls(log, c, from, to)?;
        let edited = edit_marks(log, c, from, to)?;
        let records = self.read_records(&places)?;
        let mut out = Vec::with_capacity(places.len());
        for (p, (payload, whole)) in places.iter().zip(records) {
            let mut message = crate::writer::message_in(&payload, loc_sub(p.loc))?;
            if message.conversation != *c || message.seq != p.seq {
                return Err(StorageError::Corrupt("an index points at another message"));
            }
            match (recalled.get(&p.seq), edited.get(&p.seq)) {
                (Some(r), _) => {
                    message.body = bytes::Bytes::new();
                    message.recalled = Some(*r);
                }
                (None, Some(mark)) => {
                    // The original may have been erased (versions not kept): its
                    // checksum is forgiven as a recalled one's is.
                    if !whole {
                        message.body = bytes::Bytes::new();
                    }
                    message.edited = Some(self.edited(log, c, *mark)?);
                }
                (None, None) if !whole => {
                    return Err(StorageError::Corrupt("message record checksum"))
                }
                (None, None) => {}
            }
            out.push(message);
        }
        Ok(out)
    }

    /// What a read shows of an edit: the mark, with the latest edit event's body.
    fn edited(&self, log: &sled::Tree, c: &ConversationId, mark: EditMark) -> Result<Edited> {
        let event_body = match self.locate(log, c, mark.event_seq, mark.event_seq)?.pop() {
            Some(p) => {
                let (payload, whole) = self
                    .read_records(std::slice::from_ref(&p))?
                    .pop()
                    .ok_or(StorageError::Corrupt("edit event"))?;
                if !whole {
                    return Err(StorageError::Corrupt("edit event checksum"));
                }
                crate::writer::message_in(&payload, loc_sub(p.loc))?.body
            }
            // Retention took the event but not the message: the edit is still
            // marked, its content gone with the event.
            None => bytes::Bytes::new(),
        };
        Ok(Edited {
            by_user: mark.by_user,
            at_ms: mark.at_ms,
            count: mark.count,
            event_seq: mark.event_seq,
            event_body,
        })
    }

    /// The records `places` point at (in the same order), with whether each one's
    /// checksum holds. Records of one segment that lie near each other (a page of
    /// one conversation usually does) are read with one `pread`.
    fn read_records(&self, places: &[Place]) -> Result<Vec<(Vec<u8>, bool)>> {
        /// Largest stretch of a segment read at once for the records in it.
        const SPAN: u64 = 256 << 10;
        let mut out: Vec<Option<(Vec<u8>, bool)>> = vec![None; places.len()];
        let mut order: Vec<usize> = (0..places.len()).collect();
        order.sort_unstable_by_key(|&i| (places[i].segment, loc_offset(places[i].loc)));
        let mut at = 0;
        while at < order.len() {
            let first = &places[order[at]];
            let start = loc_offset(first.loc);
            let mut end = at + 1;
            while end < order.len()
                && places[order[end]].segment == first.segment
                && loc_offset(places[order[end]].loc) - start < SPAN
            {
                end += 1;
            }
            let file = self.log_file(first.segment)?;
            let last = loc_offset(places[order[end - 1]].loc);
            // The last record's length is not known yet: read a little past its start.
            let mut buf = vec![0u8; (last - start) as usize + 4096];
            let got = read_up_to(&file, &mut buf, start)?;
            buf.truncate(got);
            for &i in &order[at..end] {
                let rel = (loc_offset(places[i].loc) - start) as usize;
                out[i] = Some(match commitlog::parse_at(&buf, rel) {
                    Some(record) => record,
                    // Longer than what was read: on its own.
                    None => commitlog::read_at(&file, loc_offset(places[i].loc))?
                        .ok_or(StorageError::Corrupt("an index points past its segment"))?,
                });
            }
            at = end;
        }
        Ok(out
            .into_iter()
            .map(|r| r.expect("every place read"))
            .collect())
    }

    /// The message at `loc` of `segment`, and whether its record's checksum holds.
    pub fn read_at(&self, segment: u64, loc: u64) -> Result<(StoredMessage, bool)> {
        let file = self.log_file(segment)?;
        let (payload, whole) = commitlog::read_at(&file, loc_offset(loc))?
            .ok_or(StorageError::Corrupt("an index points past its segment"))?;
        Ok((crate::writer::message_in(&payload, loc_sub(loc))?, whole))
    }

    fn log_file(&self, segment: u64) -> Result<Arc<File>> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = logs.get(&segment) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(commitlog::segment_path(&self.dir, segment))?);
        if logs.len() >= self.open_files {
            logs.clear();
        }
        logs.insert(segment, f.clone());
        Ok(f)
    }

    fn idx(&self, segment: u64) -> Result<Arc<IdxFile>> {
        let mut idxs = self.idxs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = idxs.get(&segment) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            IdxFile::open(&self.dir, segment)?.ok_or(StorageError::Corrupt(
                "a sealed segment's index file is missing",
            ))?,
        );
        if idxs.len() >= self.open_files {
            idxs.clear();
        }
        idxs.insert(segment, f.clone());
        Ok(f)
    }

    /// Overwrites the bodies of recalled messages whose records lie before
    /// `checkpoint` (a position of this shard's log) with zeros, durably, and drops
    /// their erasure marks. Returns how many were erased.
    pub fn erase_recalled(&self, log: &sled::Tree, checkpoint: u64) -> Result<usize> {
        let mut erased = 0;
        for entry in log.scan_prefix([ERASE]) {
            let (k, _) = entry?;
            let c =
                keys::parse_conv(&k[1..1 + CONV_LEN]).ok_or(StorageError::Corrupt("erase key"))?;
            let seq = key_u64(&k).ok_or(StorageError::Corrupt("erase key"))?;
            let Some(place) = self.locate(log, &c, seq, seq)?.pop() else {
                // Gone already (retention).
                log.remove(&k)?;
                continue;
            };
            if loc_sub(place.loc) != 0 {
                // A message an operation stored (a group event): marked, not erased.
                log.remove(&k)?;
                continue;
            }
            let offset = loc_offset(place.loc);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(commitlog::segment_path(&self.dir, place.segment))?;
            let Some((mut payload, _)) = commitlog::read_at(&file, offset)? else {
                return Err(StorageError::Corrupt("an index points past its segment"));
            };
            if place.segment + offset + (HEADER + payload.len()) as u64 > checkpoint {
                // Not before the checkpoint yet: an open may still read it as part
                // of the log's tail, where a torn erasure would look like a torn end.
                continue;
            }
            let body = crate::writer::body_start(&payload)?;
            if payload[body..].iter().any(|&b| b != 0) {
                payload[body..].fill(0);
                let crc = crc32fast::hash(&payload);
                file.write_all_at(&payload[body..], offset + (HEADER + body) as u64)?;
                file.write_all_at(&crc.to_le_bytes(), offset + 4)?;
                file.sync_data()?;
            }
            log.remove(&k)?;
            erased += 1;
        }
        Ok(erased)
    }

    /// Deletes the sealed segments before `checkpoint` that hold no message at or
    /// above its conversation's retention floor (`floor`). Returns the bytes freed.
    pub fn reclaim(
        &self,
        log: &sled::Tree,
        checkpoint: u64,
        floor: impl Fn(&ConvKey) -> Result<u64>,
    ) -> Result<u64> {
        let mut freed = 0;
        let sealed: Vec<u64> = log
            .scan_prefix([SEALED])
            .keys()
            .map(|k| {
                let k = k?;
                k.get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or(StorageError::Corrupt("sealed segment key"))
            })
            .collect::<Result<_>>()?;
        for segment in sealed {
            let path = commitlog::segment_path(&self.dir, segment);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if segment + len > checkpoint {
                continue;
            }
            let runs = self.idx(segment)?.runs()?;
            let mut live = false;
            for r in &runs {
                if r.last_seq >= floor(&r.conv)? {
                    live = true;
                    break;
                }
            }
            if live {
                continue;
            }
            self.logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&segment);
            self.idxs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&segment);
            std::fs::remove_file(&path)?;
            std::fs::remove_file(idx_path(&self.dir, segment))?;
            let mut batch = sled::Batch::default();
            for r in &runs {
                batch.remove(&run_key(&r.conv, r.first_seq));
            }
            batch.remove(&sealed_key(segment));
            log.apply_batch(batch)?;
            freed += len;
        }
        Ok(freed)
    }

    /// Drops the sled runs of `c` that end below `keep_from` (retention).
    pub fn drop_runs_below(log: &sled::Tree, c: &ConversationId, keep_from: u64) -> Result<()> {
        let conv = keys::conv(c);
        let mut batch = sled::Batch::default();
        for entry in log.range(run_key(&conv, 0)..run_key(&conv, keep_from)) {
            let (k, v) = entry?;
            let last = v
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StorageError::Corrupt("run"))?;
            if last < keep_from {
                batch.remove(k);
            }
        }
        for range in [
            recalled_key(c, 0)..recalled_key(c, keep_from),
            edited_key(c, 0)..edited_key(c, keep_from),
            conv_u64_key(MENTIONS, c, 0)..conv_u64_key(MENTIONS, c, keep_from),
            conv_u64_key(EDIT_EVENT, c, 0)..conv_u64_key(EDIT_EVENT, c, keep_from),
        ] {
            for k in log.range(range).keys() {
                batch.remove(k?);
            }
        }
        log.apply_batch(batch)?;
        Ok(())
    }
}

/// Reads from `offset` into `buf` until it is full or the file ends; returns how
/// many bytes were read.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Indexes a segment file from its records (a segment not sealed before a
/// restart). Records whose checksum fails (a torn erasure: only the body changed)
/// are indexed by their header all the same.
fn scan_segment(path: &Path) -> Result<(SegmentIndex, Vec<(u64, u64)>)> {
    let mut index = SegmentIndex::default();
    let mut idem = Vec::new();
    for (offset, payload, _) in commitlog::scan(path)? {
        let Ok(messages) = crate::writer::messages_in(&payload) else {
            tracing::warn!(path = %path.display(), offset, "an unreadable record in a log segment");
            continue;
        };
        for (sub, m) in messages {
            let l = loc(offset, sub);
            index.add(keys::conv(&m.conversation), m.seq, l);
            idem.push((idem_hash(&m.conversation, m.sender, &m.client_msg_id), l));
        }
    }
    idem.sort_unstable();
    Ok((index, idem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_where_seqs_jump_and_come_out_sorted() {
        let a = keys::conv(&ConversationId::Group(2));
        let b = keys::conv(&ConversationId::Group(1));
        let mut index = SegmentIndex::default();
        for (conv, seq) in [(a, 5), (b, 1), (a, 6), (b, 2), (a, 9), (a, 9)] {
            index.add(conv, seq, seq * 100);
        }
        assert_eq!(index.get(&a, 6), Some(600));
        assert_eq!(index.get(&a, 7), None);
        assert_eq!(index.get(&a, 9), Some(900));
        let (runs, locs) = index.table();
        let firsts: Vec<_> = runs
            .iter()
            .map(|r| (r.conv, r.first_seq, r.last_seq))
            .collect();
        assert_eq!(firsts, [(b, 1, 2), (a, 5, 6), (a, 9, 9)]);
        assert_eq!(locs, [100, 200, 500, 600, 900]);
        assert_eq!(runs[2].loc_pos, 4);
    }

    #[test]
    fn index_files_round_trip_and_a_short_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let conv = keys::conv(&ConversationId::Group(7));
        let mut index = SegmentIndex::default();
        for seq in 1..=3 {
            index.add(conv, seq, loc(seq * 40, 0));
        }
        let (runs, locs) = index.table();
        let idem = vec![(1, loc(40, 0)), (9, loc(80, 0))];
        write_idx(dir.path(), 4096, &runs, &locs, &idem).unwrap();
        let f = IdxFile::open(dir.path(), 4096).unwrap().unwrap();
        assert_eq!(f.runs().unwrap(), runs);
        assert_eq!(f.locs(1, 2).unwrap(), [loc(80, 0), loc(120, 0)]);
        assert_eq!(f.idem().unwrap(), idem);
        assert!(f.locs(2, 2).is_err());
        let path = idx_path(dir.path(), 4096);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 1).unwrap();
        assert!(IdxFile::open(dir.path(), 4096).unwrap().is_none());
        assert!(IdxFile::open(dir.path(), 1).unwrap().is_none());
    }

    #[test]
    fn the_window_finds_recent_sends_and_forgets_the_oldest_segments() {
        let mut w = IdemWindow::new(4, 0);
        w.insert(10, 1);
        w.insert(11, 2);
        w.insert(10, 3);
        assert_eq!(w.candidates(10), [(0, 3), (0, 1)]);
        w.close(100);
        w.insert(12, 4);
        assert_eq!(w.candidates(11), [(0, 2)]);
        assert_eq!(w.candidates(12), [(100, 4)]);
        w.close(200);
        w.insert(13, 5);
        // Four entries at most: the first segment (three) is gone.
        assert!(w.len() <= 4 + 1);
        assert!(w.candidates(11).is_empty());
        assert_eq!(w.candidates(12), [(100, 4)]);
        assert_eq!(w.candidates(13), [(200, 5)]);
    }

    #[test]
    fn the_idempotency_hash_tells_sends_apart() {
        let c = ConversationId::direct(1, 2).unwrap();
        let h = idem_hash(&c, 1, "a");
        assert_eq!(h, idem_hash(&c, 1, "a"));
        assert_ne!(h, idem_hash(&c, 2, "a"));
        assert_ne!(h, idem_hash(&c, 1, "b"));
        assert_ne!(h, idem_hash(&ConversationId::direct(1, 3).unwrap(), 1, "a"));
    }
}
