//! Store behaviour through its public API: seq allocation under concurrency,
//! idempotency, history paging, the commit listener, and reopening a data directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{
    AppendRequest, CommitListener, EventsFor, GroupChange, GroupEvent, HistoryRange, JoinPolicy,
    MembershipChange, Role, StorageError, Store, StoreConfig, StoredMessage,
};
mod common;

use common::copy_dir;
use proptest::prelude::*;

fn open(dir: &std::path::Path, shards: usize) -> Store {
    let mut config = StoreConfig::for_tests(dir);
    config.shards = shards;
    Store::open(config, None).unwrap()
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
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Concurrent senders, with resends, never produce a gap or a duplicate seq, and a
    /// resend always gets the original seq back.
    #[test]
    fn concurrent_senders_get_gap_free_unique_seqs(
        senders in 2usize..6,
        per_sender in 1usize..40,
        conversations in 1u64..4,
        resend_every in 2usize..7,
        shards in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), shards);
        let rt = runtime();
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for s in 0..senders {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let sender = 100 + s as u64;
                    let mut out = Vec::new();
                    for i in 0..per_sender {
                        let peer = 1 + (i as u64 % conversations);
                        let c = ConversationId::direct(sender, peer).unwrap();
                        let id = format!("{sender}-{i}");
                        let first = store.append(request(c, sender, &id, "hi")).await.unwrap();
                        prop_assert!(!first.duplicate);
                        if i % resend_every == 0 {
                            let again = store.append(request(c, sender, &id, "hi")).await.unwrap();
                            prop_assert!(again.duplicate);
                            prop_assert_eq!(again.seq, first.seq);
                        }
                        out.push((c, first.seq));
                    }
                    Ok(out)
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap()?);
            }
            Ok::<_, TestCaseError>(all)
        })?;
        let mut by_conv: HashMap<ConversationId, Vec<u64>> = HashMap::new();
        for (c, seq) in results {
            by_conv.entry(c).or_default().push(seq);
        }
        for (c, mut seqs) in by_conv {
            seqs.sort_unstable();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            prop_assert_eq!(&seqs, &expected);
            prop_assert_eq!(store.last_seq(&c).unwrap(), seqs.len() as u64);
        }
        store.shutdown().unwrap();
    }
}

#[test]
fn history_pages_forward_and_backward() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2);
    let c = ConversationId::direct(1, 2).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for i in 1..=25u64 {
            let a = store
                .append(request(
                    c,
                    1 + i % 2,
                    &format!("m{i}"),
                    &format!("text {i}"),
                ))
                .await
                .unwrap();
            assert_eq!(a.seq, i);
        }
    });
    let seqs = |page: &courier_storage::HistoryPage| {
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>()
    };

    let latest = store.history(&c, HistoryRange::Latest, 10).unwrap();
    assert_eq!(seqs(&latest), (16..=25).collect::<Vec<_>>());
    assert!(latest.has_more);
    let older = store.history(&c, HistoryRange::Before(16), 10).unwrap();
    assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
    let oldest = store.history(&c, HistoryRange::Before(6), 10).unwrap();
    assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
    assert!(!oldest.has_more);

    let forward = store.history(&c, HistoryRange::After(20), 10).unwrap();
    assert_eq!(seqs(&forward), (21..=25).collect::<Vec<_>>());
    assert!(!forward.has_more);
    let first = store.history(&c, HistoryRange::After(0), 3).unwrap();
    assert_eq!(seqs(&first), vec![1, 2, 3]);
    assert!(first.has_more);
    assert_eq!(first.messages[0].body, Bytes::from_static(b"text 1"));

    // Page size is capped by the configuration (100 by default).
    let capped = store.history(&c, HistoryRange::After(0), 10_000).unwrap();
    assert_eq!(capped.messages.len(), 25);
    assert!(store
        .history(&c, HistoryRange::Before(1), 10)
        .unwrap()
        .messages
        .is_empty());
    let other = ConversationId::direct(1, 3).unwrap();
    assert!(store
        .history(&other, HistoryRange::Latest, 10)
        .unwrap()
        .messages
        .is_empty());
    store.shutdown().unwrap();
}

#[test]
fn reopen_keeps_messages_seqs_and_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConversationId::direct(7, 9).unwrap();
    let rt = runtime();
    {
        let store = open(dir.path(), 3);
        rt.block_on(async {
            for i in 1..=10u64 {
                store
                    .append(request(c, 7, &format!("x{i}"), "before"))
                    .await
                    .unwrap();
            }
        });
        rt.block_on(store.mark_read(9, &c, 4)).unwrap();
        store.shutdown().unwrap();
    }
    let store = open(dir.path(), 3);
    assert_eq!(store.last_seq(&c).unwrap(), 10);
    rt.block_on(async {
        let again = store.append(request(c, 7, "x3", "before")).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.seq, 3);
        let next = store.append(request(c, 9, "y1", "after")).await.unwrap();
        assert_eq!(next.seq, 11);
    });
    let list = store.conversations(9).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].conversation, c);
    // Read up to 4 before the restart; sending seq 11 marked everything before it read.
    assert_eq!(list[0].state.read_seq, 11);
    assert_eq!(list[0].last_seq, 11);
    store.shutdown().unwrap();
    drop(store);

    let mut config = StoreConfig::for_tests(dir.path());
    config.shards = 5;
    assert!(matches!(
        Store::open(config, None),
        Err(StorageError::ShardCountMismatch {
            found: 3,
            configured: 5
        })
    ));
}

#[test]
fn read_cursor_only_moves_forward_and_only_for_participants() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2);
    let c = ConversationId::direct(1, 2).unwrap();
    runtime().block_on(async {
        for i in 0..5 {
            store
                .append(request(c, 1, &format!("r{i}"), "x"))
                .await
                .unwrap();
        }
    });
    let rt = runtime();
    assert_eq!(rt.block_on(store.mark_read(2, &c, 3)).unwrap(), 3);
    assert_eq!(rt.block_on(store.mark_read(2, &c, 2)).unwrap(), 3);
    assert_eq!(rt.block_on(store.mark_read(2, &c, 99)).unwrap(), 5);
    assert!(matches!(
        rt.block_on(store.mark_read(3, &c, 1)),
        Err(StorageError::NotParticipant)
    ));
    store.shutdown().unwrap();
}

#[derive(Default)]
struct Recorder(Mutex<BTreeMap<ConversationId, Vec<u64>>>);

impl CommitListener for Recorder {
    fn committed(&self, messages: &[StoredMessage], _: Option<&MembershipChange>) {
        let mut seen = self.0.lock().unwrap();
        for m in messages {
            seen.entry(m.conversation).or_default().push(m.seq);
        }
    }
}

fn recorder_seen(recorder: &Recorder, c: ConversationId) -> Vec<u64> {
    recorder
        .0
        .lock()
        .unwrap()
        .get(&c)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn listener_hears_each_new_message_once_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let store = Store::open(StoreConfig::for_tests(dir.path()), Some(recorder.clone())).unwrap();
    let c = ConversationId::direct(4, 5).unwrap();
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            let recorder = recorder.clone();
            tasks.push(tokio::spawn(async move {
                let seq = store
                    .append(request(c, 4, &format!("l{i}"), "x"))
                    .await
                    .unwrap()
                    .seq;
                // The listener heard of it before the append was acknowledged.
                assert!(recorder_seen(&recorder, c).contains(&seq));
                // A resend is not announced again.
                store
                    .append(request(c, 4, &format!("l{i}"), "x"))
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    store.shutdown().unwrap();
    let seen = recorder.0.lock().unwrap();
    assert_eq!(seen[&c], (1..=200).collect::<Vec<u64>>());
}

#[test]
fn appends_after_shutdown_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 1);
    store.shutdown().unwrap();
    let c = ConversationId::direct(1, 2).unwrap();
    let err = runtime()
        .block_on(store.append(request(c, 1, "late", "x")))
        .unwrap_err();
    assert!(matches!(err, StorageError::ShuttingDown));
}

/// Conversations are ordered by a store-wide activity counter: the one written last
/// is the latest, whatever the clock says, and the counter goes on above where it
/// was after a restart.
#[test]
fn activity_orders_conversations_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        ConversationId::direct(1, 2).unwrap(),
        ConversationId::direct(1, 3).unwrap(),
    );
    let activity = |store: &Store, c: ConversationId| {
        store
            .conversations(1)
            .unwrap()
            .into_iter()
            .find(|e| e.conversation == c)
            .unwrap()
            .last_activity
    };
    let rt = runtime();
    {
        let store = open(dir.path(), 3);
        rt.block_on(async {
            // Back to back: very likely the same millisecond.
            store.append(request(a, 1, "a1", "x")).await.unwrap();
            store.append(request(b, 1, "b1", "x")).await.unwrap();
        });
        assert!(activity(&store, b) > activity(&store, a));
        store.shutdown().unwrap();
    }
    let store = open(dir.path(), 3);
    let before = activity(&store, b);
    rt.block_on(store.append(request(a, 1, "a2", "x"))).unwrap();
    assert!(
        activity(&store, a) > before,
        "the counter restarted below its mark"
    );
    store.shutdown().unwrap();
}

/// What a `kill -9` of `store` leaves in `dir`, opened again: the copy, and the store
/// on it, which must have needed its commit log (else the test tests nothing).
fn crash_and_reopen(dir: &std::path::Path, store: Store) -> (tempfile::TempDir, Store) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    drop(store);
    let reopened = Store::open(crash_config(copy.path()), None).unwrap();
    let replayed = reopened
        .commit_stats()
        .replayed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        replayed > 0,
        "the copy needed no replay: the test tests nothing"
    );
    (copy, reopened)
}

fn crash_config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::for_tests(dir);
    config.shards = 3;
    // No checkpoints and no timed flushes: whatever the indexes lack on disk must
    // come from the log.
    config.checkpoint_interval = None;
    config.index_flush_every_ms = None;
    config
}

/// Acknowledged appends survive a crash that leaves the indexes behind the commit
/// log: they are applied again at open, seqs stay gap-free, resends are still
/// recognised, and what happened to a message after it was logged (a recall, a
/// retention cut) is not undone by the replay.
#[test]
fn a_crash_loses_nothing_acknowledged_and_replay_undoes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(crash_config(dir.path()), None).unwrap();
    let rt = runtime();
    let convs: Vec<ConversationId> = (2..6)
        .map(|peer| ConversationId::direct(1, peer).unwrap())
        .collect();
    rt.block_on(async {
        for i in 0..200 {
            let c = convs[i % convs.len()];
            store
                .append(request(c, 1, &format!("m{i}"), &format!("text {i}")))
                .await
                .unwrap();
        }
    });
    // After logging: message 3 of the first conversation is recalled, and the
    // second conversation's history is cut below seq 20.
    let recall = AppendRequest {
        recalls: 3,
        mentions: Vec::new(),
        edits: None,
        reply_to_seq: 3,
        ..request(convs[0], 1, "recall-3", "recalled")
    };
    let event = rt.block_on(store.append(recall.clone())).unwrap();
    // Recalled once: a second recall event is refused and stores nothing.
    let again = rt.block_on(store.append(AppendRequest {
        client_msg_id: "recall-3-again".into(),
        ..recall
    }));
    assert!(matches!(
        again,
        Err(StorageError::Recall(
            courier_storage::RecallRefusal::AlreadyRecalled
        ))
    ));
    store.prune_history(&convs[1], 20).unwrap();
    // Flush, so that the recall and the cut are in the indexes on disk (the replay
    // must not undo them); what follows is in the log alone.
    store.flush().unwrap();
    // These 100 are in the log alone when the copy is taken.
    rt.block_on(async {
        for i in 200..300 {
            let c = convs[i % convs.len()];
            store
                .append(request(c, 1, &format!("m{i}"), &format!("text {i}")))
                .await
                .unwrap();
        }
    });

    let (_copy, store) = crash_and_reopen(dir.path(), store);
    for (n, c) in convs.iter().enumerate() {
        // The first conversation holds the recall event too.
        let last = if n == 0 { 76 } else { 75 };
        assert_eq!(store.last_seq(c).unwrap(), last, "{c}");
        let first = if n == 1 { 20 } else { 1 };
        let page = store
            .history(c, HistoryRange::After(0), 100)
            .unwrap()
            .messages;
        let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{c}");
    }
    let recalled = store.message(&convs[0], 3).unwrap().unwrap();
    assert!(recalled.recalled.is_some() && recalled.body.is_empty());
    assert_eq!(
        store
            .message(&convs[0], event.seq)
            .unwrap()
            .unwrap()
            .reply_to_seq,
        3
    );
    // A resend of an acknowledged message gets its seq back; the next one goes on.
    rt.block_on(async {
        let again = store
            .append(request(convs[0], 1, "m0", "text 0"))
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.seq, 1);
        let next = store
            .append(request(convs[0], 1, "new", "after the crash"))
            .await
            .unwrap();
        assert_eq!(next.seq, 77);
    });
    // The users' conversation lists hold every conversation.
    assert_eq!(store.conversations(1).unwrap().len(), 4);
    store.shutdown().unwrap();
}

/// A recall and its event are one commit: after a crash at any point after the
/// acknowledgement, the message is erased and the event is there, never one alone;
/// the replay of the event's record erases the message if the indexes lacked it.
#[test]
fn a_recall_and_its_event_survive_a_crash_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(crash_config(dir.path()), None).unwrap();
    let rt = runtime();
    let c = ConversationId::direct(1, 2).unwrap();
    rt.block_on(async {
        store.append(request(c, 1, "a", "secret")).await.unwrap();
        // Everything so far in the indexes on disk, the recall in the log alone.
        store.flush().unwrap();
        let event = store
            .append(AppendRequest {
                recalls: 1,
                mentions: Vec::new(),
                edits: None,
                reply_to_seq: 1,
                ..request(c, 1, "recall-a", "recalled")
            })
            .await
            .unwrap();
        assert_eq!(event.seq, 2);
    });
    let (_copy, store) = crash_and_reopen(dir.path(), store);
    let erased = store.message(&c, 1).unwrap().unwrap();
    assert!(
        erased.recalled.is_some() && erased.body.is_empty(),
        "{erased:?}"
    );
    assert_eq!(store.message(&c, 2).unwrap().unwrap().reply_to_seq, 1);
    store.shutdown().unwrap();
}

/// Edits are one commit with their events too: after a crash the replay of the
/// event records marks the message edited (with the latest event, counted once
/// however often a record is applied), erases the versions a later edit dropped,
/// and a recall in the log after them erases every version.
#[test]
fn edits_survive_a_crash_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(crash_config(dir.path()), None).unwrap();
    let rt = runtime();
    let c = ConversationId::direct(1, 2).unwrap();
    let edit = |id: &str, keep: bool, text: &'static str| AppendRequest {
        edits: Some(courier_storage::EditOf {
            target: 1,
            keep_versions: keep,
        }),
        reply_to_seq: 1,
        ..request(c, 1, id, text)
    };
    rt.block_on(async {
        store.append(request(c, 1, "a", "helo")).await.unwrap();
        store.append(request(c, 2, "b", "hi")).await.unwrap();
        store.append(edit("e1", true, "hello")).await.unwrap();
        // The first edit in the indexes on disk; the second only in the log.
        store.flush().unwrap();
        store.append(edit("e2", false, "hello!")).await.unwrap();
    });
    let (_copy, store) = crash_and_reopen(dir.path(), store);
    let page = store
        .history(&c, HistoryRange::Latest, 10)
        .unwrap()
        .messages;
    let mark = page[0].edited.clone().expect("edited after the replay");
    assert_eq!((mark.count, mark.event_seq), (2, 4));
    assert_eq!(mark.event_body.as_ref(), b"hello!");
    assert!(
        page[2].recalled.is_some(),
        "the dropped version: {:?}",
        page[2]
    );
    assert!(page[3].recalled.is_none());
    rt.block_on(async {
        store.flush().unwrap();
        store
            .append(AppendRequest {
                recalls: 1,
                mentions: Vec::new(),
                reply_to_seq: 1,
                ..request(c, 1, "r", "recalled")
            })
            .await
            .unwrap();
    });
    let (_copy2, store) = crash_and_reopen(_copy.path(), store);
    let page = store
        .history(&c, HistoryRange::Latest, 10)
        .unwrap()
        .messages;
    for seq in [1usize, 3, 4] {
        let m = &page[seq - 1];
        assert!(
            m.recalled.is_some() && m.body.is_empty() && m.edited.is_none(),
            "{m:?}"
        );
    }
    store.shutdown().unwrap();
}

fn event(sender: u64, id: &str) -> EventsFor {
    let id = id.to_owned();
    Box::new(move |_| {
        vec![GroupEvent {
            sender,
            client_msg_id: id,
            body: Bytes::from_static(b"event"),
        }]
    })
}

fn add(users: &[u64]) -> GroupChange {
    GroupChange::Add {
        users: users.to_vec(),
        role: Role::Member,
        max_members: 100,
    }
}

/// Every acknowledged operation (group changes with their events, read cursors and
/// flags, friendships, device bindings) survives a crash that leaves all indexes
/// behind the logs, whole: a member removed and added again keeps the cursor of its
/// newest membership, not one from before, whatever order the logs replay in.
#[test]
fn a_crash_keeps_every_acknowledged_operation_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(crash_config(dir.path()), None).unwrap();
    let rt = runtime();
    let created = rt
        .block_on(store.create_group(
            1,
            "team",
            JoinPolicy::InviteOnly,
            false,
            &[2, 3],
            event(1, "c"),
        ))
        .unwrap();
    let g = created.info.unwrap().id;
    let c = ConversationId::Group(g);
    rt.block_on(async {
        for i in 0..10 {
            store
                .append(request(c, 2, &format!("g{i}"), "hi"))
                .await
                .unwrap();
        }
        // 3 reads, leaves, is added again (history hidden) and reads once more.
        assert_eq!(store.mark_read(3, &c, 6).await.unwrap(), 6);
        store
            .change_group(g, GroupChange::Remove { user: 3 }, event(1, "r3"))
            .await
            .unwrap()
            .unwrap();
        store.append(request(c, 2, "g-after", "hi")).await.unwrap();
        let again = store
            .change_group(g, add(&[3]), event(1, "a3"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.events[0].seq, 14);
        assert_eq!(store.mark_read(3, &c, 14).await.unwrap(), 14);
        store
            .set_conversation_flags(3, &c, Some(true), None)
            .await
            .unwrap();
        // 2 is removed; its later send is refused.
        store
            .change_group(g, GroupChange::Remove { user: 2 }, event(1, "r2"))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            store.append(request(c, 2, "late", "no")).await,
            Err(StorageError::NotParticipant)
        ));
    });
    // The test's own thread is not an async worker: these may wait for the disk.
    assert_eq!(
        store.request_friend(1, 4).unwrap(),
        Ok(courier_storage::RequestOutcome::Pending)
    );
    store.accept_friend(4, 1).unwrap().unwrap();
    rt.block_on(store.bind_device(4, "phone", 1, 10, Some(&[7; 32])))
        .unwrap();
    rt.block_on(store.bind_device(4, "old", 1, 11, None))
        .unwrap();
    store.unbind_device(4, "old").unwrap().unwrap();

    let (_copy, store) = crash_and_reopen(dir.path(), store);
    let info = store.group(g).unwrap().unwrap();
    assert_eq!(info.member_count, 2);
    let members: Vec<u64> = store.member_ids(g).unwrap().iter().map(|m| m.0).collect();
    assert_eq!(members, vec![1, 3]);
    assert!(store.conversation_state(2, &c).unwrap().is_none());
    let state = store.conversation_state(3, &c).unwrap().unwrap();
    assert_eq!((state.since_seq, state.joined_seq), (14, 13));
    assert_eq!(state.read_seq, 14);
    assert!(state.muted);
    // Each change's event is in the log, in order, and nothing after 2's removal
    // came from 2.
    let log = store
        .history(&c, HistoryRange::After(0), 100)
        .unwrap()
        .messages;
    let ids: Vec<&str> = log.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(ids.first(), Some(&"c"));
    assert_eq!(&ids[11..], &["r3", "g-after", "a3", "r2"]);
    // Both sides of the friendship; the device bound, the other one gone.
    assert!(store.relation(1, 4).unwrap().friend);
    assert!(store.relation(4, 1).unwrap().friend);
    let devices: Vec<String> = store
        .devices(4)
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(devices, vec!["phone"]);
    store.shutdown().unwrap();
}
