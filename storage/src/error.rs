//! The storage crate's error type.

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The index database failed other than by I/O (corruption it detected, a bug
    /// it reports); I/O failures are [`StorageError::Io`]. No backend's own error
    /// type crosses this crate's boundary.
    #[error("index database: {0}")]
    Index(String),
    /// The disk or the file system failed a read or a write (logs, indexes, files).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory was created with another shard count.
    #[error("data directory has {found} shards but {configured} are configured; the shard count is fixed per data directory")]
    ShardCountMismatch {
        /// Shards recorded in the data directory.
        found: usize,
        /// Shards asked for by the configuration.
        configured: usize,
    },
    /// The data directory's metadata file is unreadable.
    #[error("bad data directory metadata: {0}")]
    BadMeta(String),
    /// A stored record could not be decoded.
    #[error("corrupt record in {0}")]
    Corrupt(&'static str),
    /// The store cannot write now and says why: its indexes failed a write (the disk
    /// is full or failing) and it has not reopened yet. Retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(&'static str),
    /// The store is shutting down and takes no more writes.
    #[error("storage is shutting down")]
    ShuttingDown,
    /// A user with this name exists already.
    #[error("user name is taken")]
    NameTaken,
    /// A user name breaks the naming rules.
    #[error("invalid user name: {0}")]
    InvalidName(&'static str),
    /// A password breaks the password rules.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// Name and password do not match an account.
    #[error("unknown user or wrong password")]
    BadCredentials,
    /// Hashing or verifying a password failed.
    #[error("password hashing: {0}")]
    PasswordHash(String),
    /// An argument is out of range (too long an id, a zero seq, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The user is not a participant of the conversation.
    #[error("not a participant of this conversation")]
    NotParticipant,
    /// A recall event named a message that cannot be recalled.
    #[error("recall refused: {0:?}")]
    Recall(crate::RecallRefusal),
    /// The sender is muted in the group until `until_ms` (`u64::MAX`: until the
    /// group is unmuted).
    #[error("muted until {until_ms}")]
    Muted {
        /// Until when (ms since the Unix epoch).
        until_ms: u64,
    },
    /// An edit event named a message that cannot be edited.
    #[error("edit refused: {0:?}")]
    Edit(crate::EditRefusal),
    /// A group change was refused.
    #[error("membership change refused: {0:?}")]
    Membership(crate::MembershipRefusal),
}

impl StorageError {
    /// Whether this is the disk or the device failing a read or write (full, gone,
    /// read-only): the operation did not happen, and may succeed if tried again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Io(_) | StorageError::Unavailable(_))
    }

    /// Whether the disk is out of space (full, over quota, or a file over its size
    /// limit), as opposed to failing otherwise or being locked by another process.
    pub fn is_out_of_space(&self) -> bool {
        use std::io::ErrorKind;
        matches!(
            self,
            StorageError::Io(e) if matches!(
                e.kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
            )
        )
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StorageError::Io(io),
            other => StorageError::Index(other.to_string()),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn only_a_disk_out_of_space_counts_as_out_of_space() {
        for kind in [
            ErrorKind::StorageFull,
            ErrorKind::QuotaExceeded,
            ErrorKind::FileTooLarge,
        ] {
            let e = StorageError::Io(Error::from(kind));
            assert!(e.is_out_of_space() && e.is_unavailable(), "{kind:?}");
        }
        // Another process holding the data directory is not a state to wait out.
        let locked = StorageError::Io(Error::from(ErrorKind::WouldBlock));
        assert!(!locked.is_out_of_space());
        assert!(StorageError::Unavailable("reopening").is_unavailable());
        assert!(!StorageError::Unavailable("reopening").is_out_of_space());
        assert!(!StorageError::NotParticipant.is_unavailable());
    }
}
