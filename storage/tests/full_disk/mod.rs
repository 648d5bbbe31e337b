//! What the disk-full tests share: the "full disk" is the file-size limit, which
//! fails writes past it the way a full disk does.

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::AppendRequest;

/// A write past the file-size limit fails with EFBIG rather than killing the
/// process with SIGXFSZ.
pub fn fail_writes_past_the_limit() {
    // SAFETY: ignoring a signal installs no handler code; nothing else in these
    // single-test binaries touches SIGXFSZ.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
        .unwrap();
    }
}

/// An append from user 1 of `size` bytes.
pub fn request(c: ConversationId, id: &str, size: usize) -> AppendRequest {
    AppendRequest {
        conversation: c,
        sender: 1,
        sender_device: "dev".into(),
        client_msg_id: id.into(),
        body: Bytes::from(vec![b'x'; size]),
        reply_to_seq: 0,
        recalls: 0,
        mentions: Vec::new(),
        edits: None,
    }
}
