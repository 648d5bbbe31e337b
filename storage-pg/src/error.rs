//! PostgreSQL errors as storage errors: what a retry may fix is `is_unavailable`.

use courier_storage::StorageError;

/// Maps a PostgreSQL error: a lost or refused connection, a server shutting down,
/// a full disk, a serialization failure or a deadlock did nothing and may succeed
/// when tried again (an I/O error, which says so); anything else is the database
/// refusing the statement.
pub fn pg(e: tokio_postgres::Error) -> StorageError {
    let retryable = match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            // 08: connection exception; 53: insufficient resources (disk full, out
            // of memory, too many connections); 57P: operator intervention
            // (shutdown); 40001 / 40P01: serialization failure, deadlock.
            c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
        }
    };
    if retryable {
        StorageError::Io(std::io::Error::other(format!("postgres: {e}")))
    } else {
        StorageError::Index(format!("postgres: {e}"))
    }
}

/// A stored value PostgreSQL holds that cannot be what Courier wrote.
pub fn corrupt(what: &'static str) -> StorageError {
    StorageError::Corrupt(what)
}
