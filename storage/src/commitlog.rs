//! A shard's commit log: the one thing a group commit waits for.
//!
//! Records are appended to segment files and the whole batch is made durable with a
//! single `fdatasync`; only then are the appends acknowledged. The indexes (sled) are
//! updated from the same records without flushing, and a checkpoint (every shard's
//! sled flushed) later makes the log before it unnecessary, so its segments are
//! deleted. After a crash the records past the last applied position are read back
//! and applied again; a torn last record (its length or checksum wrong) was never
//! acknowledged and is cut off.
//!
//! On disk: `<shard>/commitlog/<position>.log`, where a position is the byte offset
//! of a segment's first record in the shard's log since it was created (positions
//! only grow). A record is `len: u32 LE`, `crc32: u32 LE` of the payload, then
//! `len` bytes of payload.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};

/// Bytes of framing before each payload.
const HEADER: usize = 8;
/// Largest payload one record may carry (a message is capped far below this).
pub const MAX_RECORD: usize = 16 << 20;
/// A segment is closed and a new one started once it holds this many bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// Position of its first byte.
    start: u64,
    /// Position just past its last byte.
    end: u64,
    path: PathBuf,
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
    /// Closed segments, oldest first.
    closed: VecDeque<Segment>,
    active: File,
    active_start: u64,
    /// Position after the last durable record.
    end: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`. Records before `applied` are known to be
    /// in the indexes already and are neither returned nor kept; the records from
    /// `applied` on are returned for the caller to apply again. A torn tail is cut
    /// off.
    pub fn open(dir: &Path, applied: u64, segment_bytes: u64) -> Result<(Self, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut segments = list_segments(dir)?;
        let mut recovered = Vec::new();
        let mut end = applied;
        let count = segments.len();
        let mut kept = VecDeque::new();
        for (i, mut segment) in segments.drain(..).enumerate() {
            let last = i + 1 == count;
            if segment.start == segment.end {
                // An empty segment (made at an open, nothing appended): nothing to keep.
                std::fs::remove_file(&segment.path)?;
                continue;
            }
            if segment.end <= applied && !last {
                std::fs::remove_file(&segment.path)?;
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
            kept.push_back(segment);
        }
        // Appends go to a fresh segment; the last one read stays until checkpointed.
        let active = create_segment(dir, end)?;
        let log = Self {
            dir: dir.to_owned(),
            closed: kept,
            active,
            active_start: end,
            end,
            segment_bytes: segment_bytes.max(1),
            buf: Vec::new(),
        };
        Ok((log, recovered))
    }

    /// Position after the last durable record.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends `payloads` and makes them durable with one `fdatasync`; returns the
    /// position after the last one. On failure nothing of this call counts: the log
    /// is cut back to where it was.
    pub fn append<'a>(&mut self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Result<u64> {
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
        if self.buf.is_empty() {
            return Ok(self.end);
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
        if self.end - self.active_start >= self.segment_bytes {
            let closed = Segment {
                start: self.active_start,
                end: self.end,
                path: segment_path(&self.dir, self.active_start),
            };
            self.closed.push_back(closed);
            self.start_segment(self.end)?;
        }
        Ok(self.end)
    }

    /// Deletes the closed segments that end at or before `checkpoint` (their records
    /// are durable in the indexes).
    pub fn truncate_below(&mut self, checkpoint: u64) -> Result<()> {
        while let Some(oldest) = self.closed.front() {
            if oldest.end > checkpoint {
                break;
            }
            std::fs::remove_file(&oldest.path)?;
            self.closed.pop_front();
        }
        Ok(())
    }

    fn start_segment(&mut self, start: u64) -> Result<()> {
        self.active = create_segment(&self.dir, start)?;
        self.active_start = start;
        Ok(())
    }
}

/// Deletes the segments of the (closed) log in `dir` that end at or before
/// `checkpoint`: what a clean shutdown no longer needs.
pub fn remove_below(dir: &Path, checkpoint: u64) -> Result<()> {
    for segment in list_segments(dir)? {
        if segment.end <= checkpoint {
            std::fs::remove_file(&segment.path)?;
        }
    }
    Ok(())
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

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.log"))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
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
        let (mut log, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert!(recovered.is_empty());
        let first = log.append([&b"one"[..], b"two"]).unwrap();
        let second = log.append([&b"three"[..]]).unwrap();
        assert_eq!(first, 2 * HEADER as u64 + 6);
        assert_eq!(second, first + HEADER as u64 + 5);
        drop(log);
        let (log, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(
            payloads(&recovered),
            [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(recovered.last().unwrap().end, second);
        assert_eq!(log.end(), second);
        drop(log);
        let (_, recovered) = CommitLog::open(dir.path(), first, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"three".to_vec()]);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        let good = log.append([&b"kept"[..]]).unwrap();
        log.append([&b"torn record"[..]]).unwrap();
        drop(log);
        // Tear the last record: keep its header and half its payload.
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        let f = OpenOptions::new().write(true).open(&seg.path).unwrap();
        f.set_len(seg.end - seg.start - 5).unwrap();
        drop(f);
        let (mut log, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec()]);
        assert_eq!(log.end(), good);
        log.append([&b"after"[..]]).unwrap();
        drop(log);
        let (_, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec(), b"after".to_vec()]);
    }

    /// Found by the store's model test: a torn record alone in the fresh segment of
    /// the last open. The segment is dropped, not kept beside the new one of the
    /// same name (whose appends a later checkpoint would then have deleted).
    #[test]
    fn a_segment_holding_only_a_torn_record_gives_way_to_the_new_one() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        let kept = log.append([&b"kept"[..]]).unwrap();
        drop(log);
        // The open made a fresh (empty) segment; the crash left half a record in it.
        let (log, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        drop(log);
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        assert_eq!(seg.start, kept);
        let mut f = OpenOptions::new().append(true).open(&seg.path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let (mut log, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"kept".to_vec()]);
        let after = log.append([&b"after"[..]]).unwrap();
        log.truncate_below(after).unwrap();
        drop(log);
        let (_, recovered) = CommitLog::open(dir.path(), kept, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"after".to_vec()]);
    }

    #[test]
    fn a_flipped_bit_ends_the_readable_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        log.append([&b"first"[..], b"second"]).unwrap();
        drop(log);
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&seg.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&seg.path, bytes).unwrap();
        let (_, recovered) = CommitLog::open(dir.path(), 0, 1 << 20).unwrap();
        assert_eq!(payloads(&recovered), [b"first".to_vec()]);
    }

    #[test]
    fn segments_roll_over_and_checkpointed_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommitLog::open(dir.path(), 0, 64).unwrap();
        let mut ends = Vec::new();
        for i in 0..20u8 {
            ends.push(log.append([&[i; 20][..]]).unwrap());
        }
        let files = list_segments(dir.path()).unwrap().len();
        assert!(files > 3, "{files} segments");
        log.truncate_below(ends[9]).unwrap();
        let left = list_segments(dir.path()).unwrap();
        assert!(left.len() < files);
        assert!(left.first().unwrap().end > ends[9] || left.first().unwrap().start >= ends[9]);
        drop(log);
        // Reopening from the checkpoint finds every record after it.
        let (_, recovered) = CommitLog::open(dir.path(), ends[9], 64).unwrap();
        let expected: Vec<Vec<u8>> = (10..20u8).map(|i| vec![i; 20]).collect();
        assert_eq!(payloads(&recovered), expected);
    }

    #[test]
    fn a_missing_segment_is_an_error_not_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = CommitLog::open(dir.path(), 0, 64).unwrap();
        for i in 0..10u8 {
            log.append([&[i; 40][..]]).unwrap();
        }
        drop(log);
        let segments = list_segments(dir.path()).unwrap();
        std::fs::remove_file(&segments[1].path).unwrap();
        assert!(CommitLog::open(dir.path(), 0, 64).is_err());
    }
}
