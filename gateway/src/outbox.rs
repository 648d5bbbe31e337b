//! A durable queue on local disk, for work that must survive a restart but leaves
//! the process (webhook events, pushes): records are appended to `<name>.log`
//! (length, CRC32, bytes), synced by the owner (every few ms and at shutdown), read
//! in order, and acknowledged by offset into `<name>.offset` (written atomically).
//! A restart reads again from the acknowledged offset; a torn last record (a crash
//! mid-append) is cut off at open, since nobody was told of it. Once everything is
//! acknowledged and the log has grown past [`RESTART_BYTES`], the owner may start it
//! over ([`RecordLog::restart_if_done`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The log starts over once everything is acknowledged and it has grown past this.
const RESTART_BYTES: u64 = 1 << 20;

struct Log {
    file: File,
    /// Bytes appended so far.
    len: u64,
    /// Bytes acknowledged so far.
    acked: u64,
    /// Where the next read starts (at or past `acked`).
    read: u64,
    /// Appended since the last sync.
    dirty: bool,
}

/// An append-only log of records with an acknowledged offset.
pub struct RecordLog {
    log: Mutex<Log>,
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

impl RecordLog {
    /// Opens (or creates) `<dir>/<name>.log` and its offset file.
    pub fn open(dir: &Path, name: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(format!("{name}.log")))?;
        let len = valid_length(&mut file)?;
        file.set_len(len)?; // a torn last record was never acknowledged to anyone
        let offset_path = dir.join(format!("{name}.offset"));
        let acked = read_offset(&offset_path)?.min(len);
        Ok(Self {
            log: Mutex::new(Log {
                file,
                len,
                acked,
                read: acked,
                dirty: false,
            }),
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
                let len = log.len;
                let _ = log.file.set_len(len);
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
    /// `max_bytes` (a larger single record is read whole).
    pub fn read_next(&self, max_records: usize, max_bytes: usize) -> std::io::Result<Batch> {
        let mut log = self.lock();
        let (start, end) = (log.read, log.len);
        if start == end {
            return Ok(Batch::default());
        }
        let want = (end - start).min(max_bytes as u64 + 8) as usize;
        let mut buf = vec![0u8; want];
        log.file.seek(SeekFrom::Start(start))?;
        log.file.read_exact(&mut buf)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while records.len() < max_records && at + 8 <= buf.len() {
            let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if at + 8 + len > buf.len() {
                if records.is_empty() {
                    // One record larger than a batch's bytes: read it whole.
                    let mut one = vec![0u8; len];
                    log.file.seek(SeekFrom::Start(start + 8))?;
                    log.file.read_exact(&mut one)?;
                    at = 8 + len;
                    records.push((start + at as u64, one));
                }
                break;
            }
            records.push((
                start + (at + 8 + len) as u64,
                buf[at + 8..at + 8 + len].to_vec(),
            ));
            at += 8 + len;
        }
        log.read = start + at as u64;
        Ok(Batch { records })
    }

    /// Reads again from the acknowledged offset (after a failed delivery).
    pub fn rewind(&self) {
        let mut log = self.lock();
        log.read = log.acked;
    }

    /// Where the next read starts.
    pub fn read_position(&self) -> u64 {
        self.lock().read
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

    /// Starts the log over when everything in it is read and acknowledged and it has
    /// grown past [`RESTART_BYTES`]; returns whether it did (offsets start from 0).
    pub fn restart_if_done(&self) -> std::io::Result<bool> {
        let mut log = self.lock();
        if log.acked != log.len || log.read != log.len || log.len <= RESTART_BYTES {
            return Ok(false);
        }
        log.file.set_len(0)?;
        log.len = 0;
        log.acked = 0;
        log.read = 0;
        drop(log);
        write_offset(&self.offset_path, 0).map(|()| true)
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

/// The length of the whole records at the start of `file`.
fn valid_length(file: &mut File) -> std::io::Result<u64> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
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

/// Writes the offset atomically (a new file renamed over the old one).
fn write_offset(path: &Path, offset: u64) -> std::io::Result<()> {
    let temp = path.with_extension("offset.new");
    let mut file = File::create(&temp)?;
    file.write_all(&offset.to_be_bytes())?;
    file.sync_data()?;
    std::fs::rename(&temp, path)
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
        assert!(!log.restart_if_done().unwrap());
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
}
