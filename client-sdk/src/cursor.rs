//! Where a client keeps its per-conversation cursors: the highest seq it has handed
//! to the application. In memory by default; file-backed so that an app restart
//! resumes where it was.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Storage for per-conversation cursors.
pub trait CursorStore: Send + Sync + 'static {
    /// Every cursor known.
    fn load(&self) -> HashMap<String, u64>;
    /// Records that everything up to `seq` in `conversation` was handed over.
    fn save(&self, conversation: &str, seq: u64);
}

/// Cursors in memory (lost when the process ends).
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<HashMap<String, u64>>,
}

impl CursorStore for MemoryCursorStore {
    fn load(&self) -> HashMap<String, u64> {
        self.cursors.lock().expect("cursor lock").clone()
    }

    fn save(&self, conversation: &str, seq: u64) {
        let mut c = self.cursors.lock().expect("cursor lock");
        let slot = c.entry(conversation.to_owned()).or_default();
        *slot = (*slot).max(seq);
    }
}

/// Cursors in a JSON file, rewritten atomically (temp file + rename) on every change.
#[derive(Debug)]
pub struct FileCursorStore {
    path: PathBuf,
    cursors: Mutex<HashMap<String, u64>>,
}

impl FileCursorStore {
    /// Opens (or starts) the cursor file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let cursors = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            cursors: Mutex::new(cursors),
        })
    }

    fn write(&self, cursors: &HashMap<String, u64>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(cursors)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

impl CursorStore for FileCursorStore {
    fn load(&self) -> HashMap<String, u64> {
        self.cursors.lock().expect("cursor lock").clone()
    }

    fn save(&self, conversation: &str, seq: u64) {
        let mut c = self.cursors.lock().expect("cursor lock");
        let slot = c.entry(conversation.to_owned()).or_default();
        if seq <= *slot {
            return;
        }
        *slot = seq;
        if let Err(e) = self.write(&c) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot persist cursors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_cursors_survive_a_restart_and_only_move_forward() {
        let dir = std::env::temp_dir().join(format!("courier-cursors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cursors.json");
        let _ = std::fs::remove_file(&path);
        {
            let store = FileCursorStore::open(&path).unwrap();
            store.save("d:1:2", 5);
            store.save("d:1:2", 3);
            store.save("g:9", 1);
        }
        let store = FileCursorStore::open(&path).unwrap();
        let loaded = store.load();
        assert_eq!(loaded["d:1:2"], 5);
        assert_eq!(loaded["g:9"], 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
