//! Helpers shared by the store's integration tests.

use std::path::Path;

/// Copies a data directory as it is on disk now: what a `kill -9` leaves behind.
/// A file the store deletes while it is copied (a log segment a writer no longer
/// needs) is left out, as a crash at that instant would leave it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let Ok(entry) = entry else {
            continue;
        };
        let target = to.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if let Err(e) = std::fs::copy(entry.path(), &target) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::NotFound,
                "copying {entry:?}: {e}"
            );
        }
    }
}
