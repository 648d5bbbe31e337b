//! When the disk refuses sled's own writes (sled then refuses every later write),
//! the managed store refuses writes with a retryable error, keeps serving reads,
//! and reopens by itself once the disk takes writes again: every acknowledged
//! message is there after, seqs gap-free, no message twice. A start on a full disk
//! is the same state: the store opens once it can.
//!
//! The "full disk" is the file-size limit (writes past it fail as on a full disk),
//! set so that the commit log's small segments still fit and sled's file cannot
//! grow. Alone in its own binary: the limit applies to the whole process, so the
//! two scenarios run one after the other in one test.
#![cfg(target_os = "linux")]

mod full_disk;

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use courier_protocol::ConversationId;
use courier_storage::{
    HistoryRange, ManagedStore, MessageLog, Operations, StorageError, StoreConfig,
};
use full_disk::request;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::for_tests(dir);
    config.shards = 1;
    config.segment_bytes = 32 * 1024;
    config.checkpoint_interval = Some(Duration::from_millis(20));
    config.reopen_check_interval = Duration::from_millis(20);
    config
}

fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}

/// Every message of `c`, in seq order.
async fn all_messages(store: &ManagedStore, c: &ConversationId) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .history(c, HistoryRange::After(after), 100)
            .await
            .unwrap();
        for m in &page.messages {
            out.push((m.seq, m.client_msg_id.clone()));
        }
        match page.messages.last() {
            Some(m) if page.has_more => after = m.seq,
            _ => return out,
        }
    }
}

async fn reopened(store: &ManagedStore, before: u64) {
    let mut reopens = store.reopens();
    tokio::time::timeout(Duration::from_secs(30), reopens.wait_for(|&n| n > before))
        .await
        .expect("the store reopens once the disk takes writes")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_index_writes_are_a_state_the_store_reopens_from() {
    full_disk::fail_writes_past_the_limit();
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    full_while_running(hard).await;
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    full_at_start(hard).await;
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
}

async fn full_while_running(hard: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = ManagedStore::open(config(dir.path()), None).unwrap();
    let c = ConversationId::direct(1, 2).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let id = format!("m{i}");
        let a = store.append(request(c, &id, 100)).await.unwrap();
        acknowledged.push((a.seq, id));
    }
    // sled's file may not grow much more; the log's 32 KiB segments still fit.
    let limit = (largest_file(dir.path()) + 1).max(4 * 32 * 1024);
    setrlimit(Resource::RLIMIT_FSIZE, limit, hard).unwrap();
    let mut refused = None;
    for i in 20..20_000 {
        let id = format!("m{i}");
        match store.append(request(c, &id, 1000)).await {
            Ok(a) => acknowledged.push((a.seq, id)),
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?} should say: try again later");
                refused = Some(id);
                break;
            }
        }
        // The checkpointer's flush may be the first to fail.
        if store.commit_stats().indexes_failed.load(Ordering::Acquire) {
            let e = store.append(request(c, "after", 10)).await.unwrap_err();
            assert!(matches!(e, StorageError::Unavailable(_)), "{e:?}");
            refused = Some("after".into());
            break;
        }
    }
    let refused = refused.expect("sled's writes fail past the limit");
    assert!(store.commit_stats().indexes_failed.load(Ordering::Acquire));
    assert_eq!(
        store.commit_stats().index_failures.load(Ordering::Relaxed),
        1
    );
    assert!(!store.writable());
    // Writes stay refused, reads are served.
    let again = store.append(request(c, "refused", 10)).await.unwrap_err();
    assert!(again.is_unavailable(), "{again:?}");
    let (seq, id) = &acknowledged[3];
    assert_eq!(
        &store
            .message(&c, *seq)
            .await
            .unwrap()
            .unwrap()
            .client_msg_id,
        id
    );

    // Space is back: the store reopens by itself.
    setrlimit(Resource::RLIMIT_FSIZE, hard, hard).unwrap();
    reopened(&store, 0).await;
    assert!(store.writable());
    assert_eq!(store.commit_stats().reopens.load(Ordering::Relaxed), 1);
    // The refused send, retried with its id: stored once, whether or not its
    // record reached the log before the indexes failed.
    let retried = store.append(request(c, &refused, 10)).await.unwrap();
    let fresh = store.append(request(c, "fresh", 10)).await.unwrap();
    assert!(fresh.seq > retried.seq);
    let stored = all_messages(&store, &c).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=fresh.seq).collect::<Vec<_>>(), "gap-free");
    let ids: HashSet<&str> = stored.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(ids.len(), stored.len(), "no message twice");
    for (seq, id) in &acknowledged {
        assert_eq!(&stored[*seq as usize - 1].1, id, "acknowledged seq {seq}");
    }
    assert!(!ids.contains("refused"));
    store.shutdown().await.unwrap();
}

async fn full_at_start(hard: u64) {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let c = ConversationId::direct(1, 2).unwrap();
    {
        let mut live = config(dir.path());
        live.checkpoint_interval = None;
        let store = ManagedStore::open(live, None).unwrap();
        for i in 0..50 {
            store
                .append(request(c, &format!("m{i}"), 100))
                .await
                .unwrap();
        }
        // What a crash leaves: the log ahead of the indexes.
        common::copy_dir(dir.path(), crashed.path());
        store.shutdown().await.unwrap();
    }
    setrlimit(Resource::RLIMIT_FSIZE, largest_file(crashed.path()), hard).unwrap();
    let store = ManagedStore::open(config(crashed.path()), None).unwrap();
    assert!(!store.writable());
    let refused = store.append(request(c, "m50", 10)).await.unwrap_err();
    assert!(refused.is_unavailable(), "{refused:?}");

    setrlimit(Resource::RLIMIT_FSIZE, hard, hard).unwrap();
    reopened(&store, 0).await;
    assert!(store.writable());
    let stored = all_messages(&store, &c).await;
    assert_eq!(stored.len(), 50);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, m)| m.0 == i as u64 + 1 && m.1 == format!("m{i}")));
    store.shutdown().await.unwrap();
}
