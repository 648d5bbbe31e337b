//! Recalling a message: its content is erased, leaving a tombstone that says who
//! recalled it and when. The caller appends the recall *event* (a system message with
//! its own seq, so clients that sync from a cursor learn of it) with
//! [`crate::AppendRequest::recalls`] set: the shard's writer erases the message in the
//! same commit as it stores the event, so after any crash both happened or neither.
//!
//! Editing works the same way: the edit event (with [`crate::AppendRequest::edits`]
//! set) marks its target edited in the commit that stores it; a read of the target
//! finds the latest edit event's body beside the original. A recall of an edited
//! message erases its edit events with it.

/// Why a recall was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallRefusal {
    /// No message with that seq (or it is past retention).
    NoMessage,
    /// Recalled already.
    AlreadyRecalled,
}

/// Why an edit was refused by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditRefusal {
    /// No message with that seq (or it is past retention).
    NoMessage,
    /// The message was recalled.
    Recalled,
}
