//! Recalling a message: its content is erased, leaving a tombstone that says who
//! recalled it and when. The caller appends the recall *event* (a system message with
//! its own seq, so clients that sync from a cursor learn of it) with
//! [`crate::AppendRequest::recalls`] set: the shard's writer erases the message in the
//! same commit as it stores the event, so after any crash both happened or neither.

/// Why a recall was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallRefusal {
    /// No message with that seq (or it is past retention).
    NoMessage,
    /// Recalled already.
    AlreadyRecalled,
}
