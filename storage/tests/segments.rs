//! Messages live in the commit log's segments: read back across sealed segments and
//! restarts, recognised when resent, erased on disk when recalled, and their space
//! freed once retention has emptied a segment.

use std::path::Path;

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{AppendRequest, HistoryRange, Store, StoreConfig};

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::for_tests(dir);
    config.shards = 1;
    // A few dozen messages a segment: every test crosses many of them.
    config.segment_bytes = 4096;
    config.checkpoint_interval = None;
    config
}

fn request(c: ConversationId, sender: u64, id: &str, text: &str) -> AppendRequest {
    AppendRequest {
        conversation: c,
        sender,
        sender_device: "dev".into(),
        client_msg_id: id.into(),
        body: Bytes::copy_from_slice(text.as_bytes()),
        reply_to_seq: 0,
        recalls: 0,
        mentions: Vec::new(),
        edits: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let logs = dir.join("shard-000").join("commitlog");
    let mut out: Vec<_> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn text(c: usize, i: usize) -> String {
    format!("conversation {c} message {i}")
}

/// Every page of `c` read forwards: its texts.
fn all_texts(store: &Store, c: &ConversationId) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.history(c, HistoryRange::After(after), 7).unwrap();
        for m in &page.messages {
            if after > 0 {
                assert_eq!(m.seq, after + 1, "gap-free, in order");
            }
            after = m.seq;
            out.push(String::from_utf8(m.body.to_vec()).unwrap());
        }
        if !page.has_more {
            return out;
        }
    }
}

#[test]
fn messages_read_back_across_sealed_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let convs = [
        ConversationId::direct(1, 2).unwrap(),
        ConversationId::direct(1, 3).unwrap(),
    ];
    let rt = runtime();
    let store = Store::open(config(dir.path()), None).unwrap();
    rt.block_on(async {
        for i in 0..300 {
            for (k, c) in convs.iter().enumerate() {
                store
                    .append(request(*c, 1, &format!("{k}-{i}"), &text(k, i)))
                    .await
                    .unwrap();
            }
        }
    });
    let expected: Vec<Vec<String>> = (0..2)
        .map(|k| (0..300).map(|i| text(k, i)).collect())
        .collect();
    let check = |store: &Store| {
        for (k, c) in convs.iter().enumerate() {
            assert_eq!(all_texts(store, c), expected[k]);
            let latest = store.history(c, HistoryRange::Latest, 10).unwrap();
            assert_eq!(latest.messages.first().unwrap().seq, 291);
            assert!(latest.has_more);
            let before = store.history(c, HistoryRange::Before(5), 10).unwrap();
            assert_eq!(before.messages.len(), 4);
            assert!(!before.has_more);
            let one = store.message(c, 150).unwrap().unwrap();
            assert_eq!(one.body, Bytes::from(text(k, 149)));
            assert!(store.message(c, 301).unwrap().is_none());
        }
    };
    check(&store);
    let sealed = files(dir.path(), "idx").len();
    assert!(sealed > 10, "{sealed} segments sealed");
    assert_eq!(files(dir.path(), "log").len(), sealed + 1);
    store.shutdown().unwrap();
    drop(store);

    let store = Store::open(config(dir.path()), None).unwrap();
    check(&store);
    // A resend of an early message is recognised after the restart.
    let again = rt
        .block_on(store.append(request(convs[0], 1, "0-3", "resent")))
        .unwrap();
    assert_eq!((again.seq, again.duplicate), (4, true));
    store.shutdown().unwrap();
}

/// A segment the last run left unsealed (a crash before its index was written) is
/// indexed from its records at the next open.
#[test]
fn a_crash_before_sealing_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConversationId::direct(8, 9).unwrap();
    let rt = runtime();
    let store = Store::open(config(dir.path()), None).unwrap();
    rt.block_on(async {
        for i in 0..200 {
            store
                .append(request(c, 1, &format!("m{i}"), &text(0, i)))
                .await
                .unwrap();
        }
    });
    store.shutdown().unwrap();
    drop(store);
    // The index files are gone; sled still says the segments are sealed.
    for idx in files(dir.path(), "idx") {
        std::fs::remove_file(idx).unwrap();
    }
    let store = Store::open(config(dir.path()), None).unwrap();
    assert_eq!(
        all_texts(&store, &c),
        (0..200).map(|i| text(0, i)).collect::<Vec<_>>()
    );
    assert!(!files(dir.path(), "idx").is_empty());
    store.shutdown().unwrap();
}

#[test]
fn a_recalled_body_is_gone_from_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConversationId::direct(4, 5).unwrap();
    let rt = runtime();
    let store = Store::open(config(dir.path()), None).unwrap();
    let secret = "the launch code is 0000";
    rt.block_on(async {
        store.append(request(c, 4, "s", secret)).await.unwrap();
        for i in 0..100 {
            store
                .append(request(c, 5, &format!("m{i}"), &text(0, i)))
                .await
                .unwrap();
        }
        let mut recall = request(c, 4, "recall", "");
        recall.recalls = 1;
        store.append(recall).await.unwrap();
    });
    let holds_secret = || {
        files(dir.path(), "log")
            .iter()
            .any(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains(secret))
    };
    let recalled = store.message(&c, 1).unwrap().unwrap();
    assert!(recalled.recalled.is_some());
    assert!(recalled.body.is_empty());
    // Erased on disk once a checkpoint covers it (the last one: at shutdown).
    assert!(holds_secret());
    store.shutdown().unwrap();
    drop(store);
    assert!(!holds_secret(), "the recalled body is still on disk");
    let store = Store::open(config(dir.path()), None).unwrap();
    let recalled = store.message(&c, 1).unwrap().unwrap();
    assert!(recalled.recalled.is_some() && recalled.body.is_empty());
    assert_eq!(
        store.message(&c, 2).unwrap().unwrap().body,
        Bytes::from(text(0, 0))
    );
    store.shutdown().unwrap();
}

#[test]
fn retention_frees_a_segment_once_every_message_in_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let busy = ConversationId::direct(1, 2).unwrap();
    let quiet = ConversationId::direct(1, 3).unwrap();
    let rt = runtime();
    let store = Store::open(config(dir.path()), None).unwrap();
    rt.block_on(async {
        store.append(request(quiet, 1, "q", "kept")).await.unwrap();
        for i in 0..400 {
            store
                .append(request(busy, 1, &format!("b{i}"), &text(0, i)))
                .await
                .unwrap();
        }
    });
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(config(dir.path()), None).unwrap();
    let before = files(dir.path(), "log").len();
    assert_eq!(store.prune_history(&busy, 391).unwrap(), 390);
    let freed = store.reclaim().unwrap();
    let after = files(dir.path(), "log").len();
    assert!(
        freed > 0 && after < before,
        "{before} segments, then {after}"
    );
    // The first segment holds the quiet conversation's message: it stays.
    assert_eq!(
        store.message(&quiet, 1).unwrap().unwrap().body,
        Bytes::from("kept")
    );
    let left = all_texts(&store, &busy);
    assert_eq!(left, (390..400).map(|i| text(0, i)).collect::<Vec<_>>());
    assert_eq!(store.first_retained_seq(&busy).unwrap(), 391);
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(config(dir.path()), None).unwrap();
    assert_eq!(all_texts(&store, &busy).len(), 10);
    store.shutdown().unwrap();
}

/// The idempotency window is bounded: within it a resend gets the original seq;
/// past it (this many later sends on the shard) the message is stored again.
#[test]
fn the_idempotency_window_is_bounded_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConversationId::direct(1, 2).unwrap();
    let rt = runtime();
    let mut config = config(dir.path());
    config.idempotency_window = 50;
    let store = Store::open(config, None).unwrap();
    rt.block_on(async {
        store.append(request(c, 1, "first", "x")).await.unwrap();
        for i in 0..20 {
            store
                .append(request(c, 1, &format!("m{i}"), "y"))
                .await
                .unwrap();
        }
        let again = store.append(request(c, 1, "first", "x")).await.unwrap();
        assert_eq!((again.seq, again.duplicate), (1, true));
        for i in 20..300 {
            store
                .append(request(c, 1, &format!("m{i}"), "y"))
                .await
                .unwrap();
        }
        let late = store.append(request(c, 1, "first", "x")).await.unwrap();
        assert!(!late.duplicate, "resent past the window: stored again");
        assert_eq!(late.seq, 302);
    });
    store.shutdown().unwrap();
}

/// What a message costs in the message store: a 100-byte message takes its log
/// record (183 bytes) and 24 bytes of index. (sled holds no entry per message; what
/// it writes per commit — a conversation's last seq, the sender's read cursor — is
/// rewritten in place, and the `fill` benchmark reports the whole store's figure.)
#[test]
fn a_message_costs_its_record_and_a_few_bytes_of_index_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let store = Store::open(config(dir.path()), None).unwrap();
    let body = "x".repeat(100);
    let segment_bytes = || -> u64 {
        let mut paths = files(dir.path(), "log");
        paths.extend(files(dir.path(), "idx"));
        paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    rt.block_on(async {
        for i in 0..5_000 {
            let c = ConversationId::direct(1, 2 + (i % 50) as u64).unwrap();
            store
                .append(request(c, 1, &format!("{i:08}"), &body))
                .await
                .unwrap();
        }
    });
    let per_message = segment_bytes() / 5_000;
    assert!(
        (183..=250).contains(&per_message),
        "{per_message} bytes per message"
    );
    store.shutdown().unwrap();
}
