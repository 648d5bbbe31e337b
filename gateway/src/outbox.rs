//! A durable queue on local disk, for work that must survive a restart but leaves
//! the process (webhook events, pushes): records are appended to `<name>.log`
//! (length, CRC32, bytes), synced by the owner (every few ms and at shutdown), read
//! in order, and acknowledged by offset into `<name>.offset` (written atomically).
//! A restart reads again from the acknowledged offset; a torn last record (a crash
//! mid-append) is cut off at open, since nobody was told of it.
//!
//! Offsets are logical: they only grow, for the life of the queue. Once more than
//! [`COMPACT_BYTES`] are acknowledged, [`RecordLog::compact`] copies what is not
//! into a new file whose header names the logical offset it starts at, and renames
//! it over the old one (a crash leaves one or the other, whole), so a queue that is
//! never empty still stays small.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Acknowledged bytes past which the log is compacted.
const COMPACT_BYTES: u64 = 1 << 20;
/// The header of a compacted log: this magic, then the logical offset it starts at.
const MAGIC: &[u8; 8] = b"CRLOG\0\0\x01";
const HEADER: u64 = 16;

struct Log {
    file: File,
    /// The logical offset of the file's first record.
    base: u64,
    /// Bytes of header before it (0 for a log never compacted).
    header: u64,
    /// The logical end: bytes appended so far.
    len: u64,
    /// Logical offset up to which everything is acknowledged.
    acked: u64,
    /// Where the next read starts (at or past `acked`).
    read: u64,
    /// Appended since the last sync.
    dirty: bool,
}

impl Log {
    /// Where logical offset `at` is in the file.
    fn physical(&self, at: u64) -> u64 {
        self.header + (at - self.base)
    }
}

/// An append-only log of records with an acknowledged offset.
pub struct RecordLog {
    log: Mutex<Log>,
    path: PathBuf,
    offset_path: PathBuf,
}

/// Records read from the log, each with the offset just past it.
#[derive(Debug, Default)]
pub struct Batch {
    /// `(end offset, record)` in log order.
    pub records: Vec<(u64, Vec<u8>)>,
}

impl Batch {
    /// The offset just past the batch's last record.
    pub fn end(&self) -> Option<u64> {
        self.records.last().map(|r| r.0)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

impl RecordLog {
    /// Opens (or creates) `<dir>/<name>.log` and its offset file.
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.log"));
        let mut file = open_append(&path)?;
        let mut head = [0u8; HEADER as usize];
        file.seek(SeekFrom::Start(0))?;
        let got = file.read(&mut head)?;
        let (base, header) = match got == head.len() && head[..8] == MAGIC[..] {
            true => (
                u64::from_be_bytes(head[8..].try_into().expect("8 bytes")),
                HEADER,
            ),
            false => (0, 0),
        };
        let valid = valid_length(&mut file, header)?;
        file.set_len(header + valid)?; // a torn last record was never acknowledged
        let offset_path = dir.join(format!("{name}.offset"));
        let len = base + valid;
        // Compaction may have begun past the offset last saved: what it dropped was
        // acknowledged.
        let acked = read_offset(&offset_path)?.max(base).min(len);
        Ok(Self {
            log: Mutex::new(Log {
                file,
                base,
                header,
                len,
                acked,
                read: acked,
                dirty: false,
            }),
            path,
            offset_path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `records` (to the page cache; [`RecordLog::sync`] makes them durable).
    /// On an error nothing of them stays in the log.
    pub fn append(&self, records: &[Vec<u8>]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(records.iter().map(|r| r.len() + 8).sum());
        for r in records {
            bytes.extend_from_slice(&(r.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(r).to_be_bytes());
            bytes.extend_from_slice(r);
        }
        let mut log = self.lock();
        match log.file.write_all(&bytes) {
            Ok(()) => {
                log.len += bytes.len() as u64;
                log.dirty = true;
                Ok(())
            }
            Err(e) => {
                let end = log.physical(log.len);
                let _ = log.file.set_len(end);
                Err(e)
            }
        }
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut log = self.lock();
        if log.dirty {
            log.file.sync_data()?;
            log.dirty = false;
        }
        Ok(())
    }

    /// Bytes appended but not acknowledged.
    pub fn backlog_bytes(&self) -> u64 {
        let log = self.lock();
        log.len - log.acked
    }

    /// The next records after the last read, at most `max_records` and about
    /// `max_bytes` (a larger single record is read whole). A record whose checksum
    /// does not match ends the read (and is reported as an error).
    pub fn read_next(&self, max_records: usize, max_bytes: usize) -> std::io::Result<Batch> {
        let mut log = self.lock();
        let (start, end) = (log.read, log.len);
        if start == end {
            return Ok(Batch::default());
        }
        let want = (end - start).min(max_bytes as u64 + 8) as usize;
        let mut buf = vec![0u8; want];
        let at_file = log.physical(start);
        log.file.seek(SeekFrom::Start(at_file))?;
        log.file.read_exact(&mut buf)?;
        let corrupt = || std::io::Error::other("a queue record does not match its checksum");
        let mut records = Vec::new();
        let mut at = 0usize;
        while records.len() < max_records && at + 8 <= buf.len() {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_be_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
            if start + (at + 8 + len) as u64 > end {
                return Err(corrupt());
            }
            let record = if at + 8 + len > buf.len() {
                if !records.is_empty() {
                    break;
                }
                // One record larger than a batch's bytes: read it whole.
                let mut one = vec![0u8; len];
                log.file.seek(SeekFrom::Start(at_file + 8))?;
                log.file.read_exact(&mut one)?;
                one
            } else {
                buf[at + 8..at + 8 + len].to_vec()
            };
            if crc32fast::hash(&record) != crc {
                return Err(corrupt());
            }
            at += 8 + len;
            records.push((start + at as u64, record));
        }
        log.read = start + at as u64;
        Ok(Batch { records })
    }

    /// Where the next read starts.
    pub fn read_position(&self) -> u64 {
        self.lock().read
    }

    /// Reads again from the acknowledged offset (after a failed delivery).
    pub fn rewind(&self) {
        let mut log = self.lock();
        log.read = log.acked;
    }

    /// Everything up to `offset` (never past what was read) is done: saved as the
    /// offset a restart resumes from.
    pub fn acknowledge(&self, offset: u64) -> std::io::Result<()> {
        let mut log = self.lock();
        let offset = offset.min(log.read);
        if offset <= log.acked {
            return Ok(());
        }
        log.acked = offset;
        drop(log);
        write_offset(&self.offset_path, offset)
    }

    /// Drops what is acknowledged from the file once it is more than
    /// [`COMPACT_BYTES`]: the rest is copied to a new file (synced) that replaces the
    /// old one. Offsets do not change. Returns whether it compacted.
    pub fn compact(&self) -> std::io::Result<bool> {
        let mut log = self.lock();
        if log.acked - log.base <= COMPACT_BYTES {
            return Ok(false);
        }
        let new_base = log.acked;
        let mut rest = vec![0u8; (log.len - new_base) as usize];
        let from = log.physical(new_base);
        log.file.seek(SeekFrom::Start(from))?;
        log.file.read_exact(&mut rest)?;
        let temp = self.path.with_extension("log.new");
        {
            let mut out = File::create(&temp)?;
            out.write_all(MAGIC)?;
            out.write_all(&new_base.to_be_bytes())?;
            out.write_all(&rest)?;
            out.sync_all()?;
        }
        std::fs::rename(&temp, &self.path)?;
        sync_dir(&self.path)?;
        log.file = open_append(&self.path)?;
        log.base = new_base;
        log.header = HEADER;
        log.dirty = false;
        Ok(true)
    }
}

/// Syncs the directory holding `path` (so that a rename in it is durable).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Runs `sync` on a blocking thread every `every` until `shutdown` (the owner syncs
/// once more after it).
pub fn spawn_syncer(
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    sync: impl Fn() + Clone + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let _ = tokio::task::spawn_blocking(sync.clone()).await;
                }
            }
        }
    })
}

/// The length of the whole records of `file` after its `header` bytes.
fn valid_length(file: &mut File, header: u64) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(header))?;
    file.read_to_end(&mut bytes)?;
    let mut at = 0usize;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(record) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(record) != crc {
            break;
        }
        at += 8 + len;
    }
    Ok(at as u64)
}

fn read_offset(path: &Path) -> std::io::Result<u64> {
    match std::fs::read(path) {
        Ok(b) if b.len() == 8 => Ok(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        Ok(_) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Writes the offset atomically (a new file renamed over the old one, durably).
fn write_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let temp = path.with_extension("offset.new");
    let mut file = File::create(&temp)?;
    file.write_all(&offset.to_be_bytes())?;
    file.sync_data()?;
    std::fs::rename(&temp, path)?;
    sync_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_is_not_part_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), "q").unwrap();
        log.append(&[br#"{"id":"a"}"#.to_vec()]).unwrap();
        log.sync().unwrap();
        drop(log);
        let path = dir.path().join("q.log");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0, 0, 0, 9, 1, 2]).unwrap(); // a torn header
        let log = RecordLog::open(dir.path(), "q").unwrap();
        let batch = log.read_next(10, 1024).unwrap();
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].1, br#"{"id":"a"}"#);
    }

    #[test]
    fn reads_resume_from_the_acknowledged_offset_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), "q").unwrap();
        let records: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        log.append(&records).unwrap();
        let first = log.read_next(2, 1 << 20).unwrap();
        assert_eq!(first.records.len(), 2);
        let rest = log.read_next(10, 150).unwrap(); // one whole record past the bytes
        assert_eq!(rest.records.len(), 1);
        log.acknowledge(first.end().unwrap()).unwrap();
        assert!(!log.compact().unwrap());
        log.rewind();
        assert_eq!(
            log.read_next(10, 1 << 20).unwrap().records[0].1,
            vec![2; 100]
        );
        log.sync().unwrap();
        drop(log);
        let log = RecordLog::open(dir.path(), "q").unwrap();
        let again = log.read_next(10, 1 << 20).unwrap();
        let firsts: Vec<u8> = again.records.iter().map(|r| r.1[0]).collect();
        assert_eq!(firsts, vec![2, 3, 4]);
        assert_eq!(log.backlog_bytes(), 3 * 108);
    }

    #[test]
    fn compaction_keeps_offsets_and_what_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), "q").unwrap();
        // Never empty: always a record behind the acknowledged offset.
        let mut last_end = 0;
        for round in 0..40u32 {
            let records: Vec<Vec<u8>> = (0..10u32)
                .map(|i| (round * 10 + i).to_be_bytes().repeat(1000))
                .collect();
            log.append(&records).unwrap();
            let batch = log.read_next(100, 1 << 22).unwrap();
            // Acknowledge all but the last record read.
            let keep = &batch.records[batch.records.len() - 2];
            log.acknowledge(keep.0).unwrap();
            last_end = batch.end().unwrap();
            log.compact().unwrap();
            log.rewind();
            let again = log.read_next(1, 1 << 22).unwrap();
            assert_eq!(again.records[0].0, last_end);
            assert_eq!(
                again.records[0].1,
                (round * 10 + 9).to_be_bytes().repeat(1000)
            );
        }
        let size = std::fs::metadata(dir.path().join("q.log")).unwrap().len();
        assert!(size < 2 * COMPACT_BYTES, "{size} bytes");
        log.sync().unwrap();
        drop(log);
        let log = RecordLog::open(dir.path(), "q").unwrap();
        let batch = log.read_next(10, 1 << 22).unwrap();
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].0, last_end);
        assert_eq!(batch.records[0].1, 399u32.to_be_bytes().repeat(1000));
        // Appends after a reopen continue the logical offsets.
        log.append(&[vec![7; 10]]).unwrap();
        let next = log.read_next(10, 1024).unwrap();
        assert_eq!(next.records[0].0, last_end + 18);
    }

    #[test]
    fn a_record_that_does_not_match_its_checksum_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = RecordLog::open(dir.path(), "q").unwrap();
        log.append(&[vec![1; 32]]).unwrap();
        let mut file = OpenOptions::new()
            .write(true)
            .open(dir.path().join("q.log"))
            .unwrap();
        file.seek(SeekFrom::Start(12)).unwrap();
        file.write_all(&[9]).unwrap();
        assert!(log.read_next(10, 1024).is_err());
    }
}
