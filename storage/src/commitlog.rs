//! A shard's commit log: the one thing a group commit waits for, and where the
//! messages live.
//!
//! Records are appended to segment files and the whole batch is made durable with a
//! single `fdatasync`; only then are the appends acknowledged. The indexes (sled) are
//! updated from the same records without flushing, and a checkpoint (every shard's
//! sled flushed) bounds how much of the log an open applies again. Segments are not
//! deleted at checkpoints: they hold the messages themselves (see `segments`, which
//! indexes them and deletes them once retention has emptied them). After a crash
//! the records past the last applied position are read back and applied again; a
//! torn last record (its length or checksum wrong) was never acknowledged and is
//! cut off.
//!
//! On disk: `<shard>/commitlog/<position>.log`, where a position is the byte offset
//! of a segment's first record in the shard's log since it was created (positions
//! only grow). A record is `len: u32 LE`, `crc32: u32 LE` of the payload, then
//! `len` bytes of payload.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// Bytes of framing before each payload.
pub const HEADER: usize = 8;
/// Largest payload one record may carry (a message is capped far below this).
pub const MAX_RECORD: usize = 16 << 20;
/// A segment is closed and a new one started once it holds this many bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// One segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Position of its first byte.
    pub start: u64,
    /// Position just past its last byte.
    pub end: u64,
    /// The file.
    pub path: PathBuf,
}

/// Where one [`CommitLog::append`] put its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The start of the segment that holds them all.
    pub segment: u64,
    /// The position of the first record.
    pub first: u64,
    /// The position after the last one.
    pub end: u64,
    /// The segment was full after this append and is closed: `(start, end)`.
    pub closed: Option<(u64, u64)>,
}

/// A record read back at recovery: its payload and the position just past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The record's payload.
    pub payload: Vec<u8>,
    /// The position after the record.
    pub end: u64,
}

/// An open commit log, owned by one writer thread.
pub struct CommitLog {
    dir: PathBuf,
    active: File,
    active_start: u64,
    /// Position after the last durable record.
    end: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`. Records before `applied` are known to be
    /// in the indexes already and are not returned; the records from `applied` on
    /// are returned for the caller to apply again. A torn tail is cut off. Also
    /// returns every segment kept (all of them closed: appends go to a fresh one).
    pub fn open(
        dir: &Path,
        applied: u64,
        segment_bytes: u64,
    ) -> Result<(Self, Vec<Recovered>, Vec<Segment>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments = list_segments(dir)?;
        let mut recovered = Vec::new();
        let mut end = applied;
        let count = segments.len();
        let mut kept = Vec::new();
        for (i, mut segment) in segments.drain(..).enumerate() {
            let last = i + 1 == count;
            if segment.start == segment.end {
                // An empty segment (made at an open, nothing appended): nothing to keep.
                std::fs::remove_file(&segment.path)?;
                continue;
            }
            if segment.end <= applied && !last {
                // Applied already; kept for the messages it holds. Segments this
                // far back may be gone (retention deleted them).
                kept.push(segment);
                continue;
            }
            if segment.start > end {
                return Err(StorageError::Corrupt("commit log: a segment is missing"));
            }
            let from = applied.max(segment.start);
            let good_end = read_records(&segment, from, &mut recovered)?;
            if good_end < segment.end {
                if !last {
                    return Err(StorageError::Corrupt(
                        "commit log: a damaged record before the last segment",
                    ));
                }
                tracing::warn!(
                    segment = %segment.path.display(),
                    cut = segment.end - good_end,
                    "commit log: cutting off a torn tail (never acknowledged)"
                );
                let f = OpenOptions::new().write(true).open(&segment.path)?;
                f.set_len(good_end - segment.start)?;
                f.sync_all()?;
                segment.end = good_end;
                if segment.end == segment.start {
                    // Nothing but the torn record: the fresh segment below takes
                    // its place (and its name).
                    drop(f);
                    std::fs::remove_file(&segment.path)?;
                    continue;
                }
            }
            end = end.max(segment.end);
            kept.push(segment);
        }
        // Appends go to a fresh segment.
        let active = create_segment(dir, end)?;
        let log = Self {
            dir: dir.to_owned(),
            active,
            active_start: end,
            end,
            segment_bytes: segment_bytes.max(1),
            buf: Vec::new(),
        };
        Ok((log, recovered, kept))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The start of the segment appends go to.
    pub fn active_start(&self) -> u64 {
        self.active_start
    }

    /// Position after the last durable record.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends `payloads` and makes them durable with one `fdatasync`; says where
    /// they went. On failure nothing of this call counts: the log is cut back to
    /// where it was.
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<Written> {
        self.buf.clear();
        for p in payloads {
            if p.len() > MAX_RECORD {
                return Err(StorageError::InvalidArgument("record too large"));
            }
            self.buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            self.buf
                .extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            self.buf.extend_from_slice(p);
        }
        let first = self.end;
        let segment = self.active_start;
        if self.buf.is_empty() {
            return Ok(Written {
                segment,
                first,
                end: first,
                closed: None,
            });
        }
        let written = self
            .active
            .write_all(&self.buf)
            .and_then(|()| self.active.sync_data());
        if let Err(e) = written {
            // Whatever reached the file is not acknowledged: cut it off again so
            // that the next batch does not follow a half-written one.
            let keep = self.end - self.active_start;
            let _ = self.active.set_len(keep);
            let _ = self.active.seek(SeekFrom::Start(keep));
            return Err(e.into());
        }
        self.end += self.buf.len() as u64;
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        let mut closed = None;
        if self.end - self.active_start >= self.segment_bytes {
            // The batch is durable whatever happens next; a failure to start the
            // next segment shows at the next append.
            closed = Some((self.active_start, self.end));
            match create_segment(&self.dir, self.end) {
                Ok(file) => {
                    self.active = file;
                    self.active_start = self.end;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a new log segment; appending to the full one");
                    closed = None;
                }
            }
        }
        Ok(Written {
            segment,
            first,
            end: self.end,
            closed,
        })
    }
}

/// Reads the record at byte `offset` of segment file `file`: its payload, and
/// whether its checksum holds (it does not after a torn in-place erasure; see
/// `segments`). `None` past the end or where no whole record lies.
pub fn read_at(file: &File, offset: u64) -> Result<Option<(Vec<u8>, bool)>> {
    let mut head = [0u8; HEADER];
    match file.read_exact_at(&mut head, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    match file.read_exact_at(&mut payload, offset + HEADER as u64) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let good = crc32fast::hash(&payload) == crc;
    Ok(Some((payload, good)))
}

/// The record at `at` of `bytes` (a stretch of a segment file): its payload and
/// whether its checksum holds; `None` when the stretch does not hold all of it.
pub fn parse_at(bytes: &[u8], at: usize) -> Option<(Vec<u8>, bool)> {
    let head = bytes.get(at..at.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    Some((payload.to_vec(), crc32fast::hash(payload) == crc))
}

/// Every whole record of a segment file, with its offset in the file and whether
/// its checksum holds, up to the first place where no whole record lies.
pub fn scan(path: &Path) -> Result<Vec<(u64, Vec<u8>, bool)>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        out.push((at as u64, payload.to_vec(), crc32fast::hash(payload) == crc));
        at += HEADER + len;
    }
    Ok(out)
}

/// Creates the segment file that starts at `start`, its name made durable.
fn create_segment(dir: &Path, start: u64) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(segment_path(dir, start))?;
    // The new file's name must survive a crash as much as its contents.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The file of the segment that starts at `start`.
pub fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.log"))
}

/// Every segment file in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = entry.metadata()?.len();
        segments.push(Segment {
            start,
            end: start + len,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.start);
    Ok(segments)
}

/// Reads the records of `segment` from position `from` into `out`; returns the
/// position after the last good one.
fn read_records(segment: &Segment, from: u64, out: &mut Vec<Recovered>) -> Result<u64> {
    let mut file = File::open(&segment.path)?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(from - segment.start))?;
    file.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        at += HEADER + len;
        out.push(Recovered {
            payload: payload.to_vec(),
            end: from + at as u64,
        });
    }
    Ok(from + at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(recovered: &[Recovered]) -> Vec<Vec<u8>> {
        recovered.iter().map(|r| r.payload.clone()).collect()
    }

    #[test]
    fn records_come_back_after_a_reopen_from_where_they_were_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert!(recovered.is_empty());
        let first = log.append([&b"one"[..], b"two"]).unwrap().end;
        let second = log.append([&b"three"[..]]).unwrap().end;
        assert_eq!(first, 2 * HEADER as u64 + 6);
        assert_eq!(second, first + HEADER as u64 + 5);
        drop(log);
        let (log, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(
            payloads(&recovered),
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(recovered.last().unwrap().end, second);
        assert_eq!(log.end(), second);
        drop(log);
        let (_, recovered, _) = CommitLog::open(dir.path(), first, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"three".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        let good = log.append([&b"kept"[..]]).unwrap().end;
        log.append([&b"torn record"[..]]).unwrap();
        drop(log);
        // Tear the last record: keep its header and half its payload.
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        let f = OpenOptions::new().write(true).open(&seg.path).unwrap();
        f.set_len(seg.end - seg.start - 5).unwrap();
        drop(f);
        let (mut log, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec()]);
        assert_eq!(log.end(), good);
        log.append([&b"after"[..]]).unwrap();
        drop(log);
        let (_, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec(), b"after".to_vec()]);
    }

    /// Found by the store's model test: a torn record alone in the fresh segment of
    /// the last open. The segment is dropped, not kept beside the new one of the
    /// same name.
    #[test]
    fn a_segment_holding_only_a_torn_record_gives_way_to_the_new_one() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        let kept = log.append([&b"kept"[..]]).unwrap().end;
        drop(log);
        // The open made a fresh (empty) segment; the crash left half a record in it.
        let (log, _, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        drop(log);
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        assert_eq!(seg.start, kept);
        let mut f = OpenOptions::new().append(true).open(&seg.path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let (mut log, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec()]);
        log.append([&b"after"[..]]).unwrap();
        drop(log);
        let (_, recovered, _) = CommitLog::open(dir.path(), kept, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"after".to_vec()]);
    }

    #[test]
    fn a_flipped_bit_ends_the_readable_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        log.append([&b"first"[..], b"second"]).unwrap();
        drop(log);
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&seg.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&seg.path, bytes).unwrap();
        let (_, recovered, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"first".to_vec()]);
    }

    #[test]
    fn segments_roll_over_and_are_kept_even_where_applied_already() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 64).unwrap();
        let mut ends = Vec::new();
        let mut closed = 0;
        for i in 0..20u8 {
            let written = log.append([&[i; 20][..]]).unwrap();
            assert_eq!(written.end - written.first, HEADER as u64 + 20);
            closed += usize::from(written.closed.is_some());
            ends.push(written.end);
        }
        let files = list_segments(dir.path()).unwrap().len();
        assert!(files > 3, "{files} segments");
        assert_eq!(files, closed + 1, "every closed segment and the active one");
        drop(log);
        // Reopening from a position finds every record after it, and keeps the
        // segments before it.
        let (_, recovered, kept) = CommitLog::open(dir.path(), ends[9], 64).unwrap();
        let expected: Vec<Vec<u8>> = (10..20u8).map(|i| vec![i; 20]).collect();
        assert_eq!(payloads(&recovered), expected);
        assert_eq!(kept.len(), files);
        // A segment wholly before the applied position may be gone (retention).
        std::fs::remove_file(&kept[0].path).unwrap();
        let (_, recovered, _) = CommitLog::open(dir.path(), ends[9], 64).unwrap();
        assert_eq!(payloads(&recovered), expected);
    }

    #[test]
    fn records_read_back_by_offset_and_by_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        let written = log.append([&b"alpha"[..], b"beta"]).unwrap();
        let path = segment_path(dir.path(), written.segment);
        let file = File::open(&path).unwrap();
        let second = written.first - written.segment + HEADER as u64 + 5;
        assert_eq!(
            read_at(&file, second).unwrap(),
            Some((b"beta".to_vec(), true))
        );
        assert_eq!(read_at(&file, second + 100).unwrap(), None);
        let scanned: Vec<_> = scan(&path).unwrap();
        assert_eq!(scanned.len(), 2);
        assert_eq!(scanned[1], (second, b"beta".to_vec(), true));
    }

    #[test]
    fn a_missing_segment_is_an_error_not_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = CommitLog::open(dir.path(), 0, 64).unwrap();
        for i in 0..10u8 {
            log.append([&[i; 40][..]]).unwrap();
        }
        drop(log);
        let segments = list_segments(dir.path()).unwrap();
        std::fs::remove_file(&segments[1].path).unwrap();
        assert!(CommitLog::open(dir.path(), 0, 64).is_err());
    }
}
