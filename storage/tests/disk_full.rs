//! A disk that refuses writes (here: the file-size limit, which fails writes past it
//! the way a full disk does) is a state, not a crash: appends fail with an error that
//! says "try again", the store says it cannot write, nothing half-written stays, and
//! once writes are possible again the store goes on by itself, without a restart.
//!
//! Alone in its own binary: the limit applies to the whole process. What is tested
//! is the commit log's path; sled's own writes on a full disk leave its shard failing
//! until a restart (noted in the README), so sled is flushed first and has nothing to
//! write while the limit is low.
#![cfg(target_os = "linux")]

mod full_disk;

use courier_protocol::ConversationId;
use courier_storage::{HistoryRange, Store, StoreConfig};
use full_disk::request;
use nix::sys::resource::{getrlimit, setrlimit, Resource};

#[test]
fn a_full_disk_is_a_state_the_store_recovers_from() {
    full_disk::fail_writes_past_the_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::for_tests(dir.path());
    config.shards = 1;
    config.checkpoint_interval = None;
    config.index_flush_every_ms = None;
    let store = Store::open(config.clone(), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = ConversationId::direct(1, 2).unwrap();
    rt.block_on(async {
        for i in 0..10 {
            store
                .append(request(c, &format!("a{i}"), 100))
                .await
                .unwrap();
        }
    });
    assert!(store.writable());

    // sled, which this test does not cover (see the module doc of `commitlog`), is
    // given nothing to write while the disk is "full".
    store.flush().unwrap();
    // The disk is "full": no file may grow past what the log holds now.
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    let log_dir = dir.path().join("shard-000").join("commitlog");
    let largest = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, largest + 64, hard).unwrap();
    let refused = rt.block_on(store.append(request(c, "full", 4096)));
    let e = refused.expect_err("a write past the limit");
    assert!(e.is_unavailable(), "{e:?} should say: try again later");
    assert!(!store.writable());
    // Again: still refused, still unwritable, nothing stored.
    assert!(rt.block_on(store.append(request(c, "full", 4096))).is_err());
    assert_eq!(store.last_seq(&c).unwrap(), 10);

    // Space is back: the same append goes through, in order, without a restart.
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    let appended = rt.block_on(store.append(request(c, "full", 4096))).unwrap();
    assert_eq!((appended.seq, appended.duplicate), (11, false));
    assert!(store.writable());
    store.shutdown().unwrap();
    drop(store);

    // Nothing half-written was left in the log: a reopen reads it all.
    let store = Store::open(config, None).unwrap();
    let seqs: Vec<u64> = store
        .history(&c, HistoryRange::After(0), 100)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    store.shutdown().unwrap();
}
