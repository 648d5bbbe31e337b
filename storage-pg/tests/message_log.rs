//! The message path on a real PostgreSQL server: gap-free seqs from concurrent
//! senders and from two stores (two gateways) on one database, resends, group
//! membership checked in commit order, recalls, history pages, retention, and a
//! server restart the committers ride out.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use common::PgServer;
use courier_protocol::ConversationId;
use courier_storage::{
    AppendRequest, HistoryRange, MessageLog, RecallRefusal, Retention, StorageError,
};
use courier_storage_pg::{PgConfig, PgStore};

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

async fn open(server: &PgServer) -> PgStore {
    PgStore::open(PgConfig::new(&server.url), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_give_gap_free_unique_seqs_and_recognise_resends() {
    let server = PgServer::start();
    let a = open(&server).await;
    let b = open(&server).await;
    let c = ConversationId::direct(1, 2).unwrap();
    let mut tasks = Vec::new();
    for (k, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for sender in [1u64, 2] {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let id = format!("{k}-{sender}-{i}");
                    let got = store.append(request(c, sender, &id, &id)).await.unwrap();
                    assert!(!got.duplicate);
                    // A resend (through either store) gets the same seq back.
                    let again = store
                        .append(request(c, sender, &id, "again"))
                        .await
                        .unwrap();
                    assert_eq!((again.seq, again.duplicate), (got.seq, true));
                    seqs.push(got.seq);
                }
                // One sender's appends get increasing seqs.
                assert!(seqs.windows(2).all(|w| w[0] < w[1]));
                seqs
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>(), "gap-free and unique");
    assert_eq!(b.last_seq(&c).await.unwrap(), 200);
    assert!(a.has_sent(&c, 2).await.unwrap());
    assert!(!a.has_sent(&c, 3).await.unwrap());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let refused = a.append(request(c, 1, "late", "x")).await;
    assert!(matches!(refused, Err(StorageError::ShuttingDown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_recalls_and_retention() {
    let server = PgServer::start();
    let store = open(&server).await;
    let c = ConversationId::direct(3, 4).unwrap();
    for i in 1..=25 {
        store
            .append(request(c, 3, &format!("m{i}"), &format!("text {i}")))
            .await
            .unwrap();
    }
    let latest = store.history(&c, HistoryRange::Latest, 10).await.unwrap();
    let seqs: Vec<u64> = latest.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
    assert!(latest.has_more);
    let before = store
        .history(&c, HistoryRange::Before(16), 10)
        .await
        .unwrap();
    assert_eq!(before.messages.first().unwrap().seq, 6);
    let after = store
        .history(&c, HistoryRange::After(20), 10)
        .await
        .unwrap();
    assert_eq!(after.messages.len(), 5);
    assert!(!after.has_more);
    let above = store
        .history_above(&c, HistoryRange::After(0), 100, 22)
        .await
        .unwrap();
    assert_eq!(above.messages.first().unwrap().seq, 23);

    // A recall erases its target in the commit that stores its event.
    let mut recall = request(c, 3, "recall-1", "");
    recall.recalls = 1;
    let event = store.append(recall.clone()).await.unwrap();
    assert_eq!(event.seq, 26);
    let erased = store.message(&c, 1).await.unwrap().unwrap();
    assert!(erased.body.is_empty() && erased.recalled.unwrap().by_user == 3);
    recall.client_msg_id = "recall-1b".into();
    let twice = store.append(recall.clone()).await;
    assert!(matches!(
        twice,
        Err(StorageError::Recall(RecallRefusal::AlreadyRecalled))
    ));
    recall.client_msg_id = "recall-99".into();
    recall.recalls = 99;
    assert!(matches!(
        store.append(recall).await,
        Err(StorageError::Recall(RecallRefusal::NoMessage))
    ));

    // Retention: history begins at the new floor; seqs go on.
    assert_eq!(store.prune_history(&c, 11).await.unwrap(), 10);
    assert_eq!(store.first_retained_seq(&c).await.unwrap(), 11);
    assert!(store.message(&c, 10).await.unwrap().is_none());
    let page = store
        .history(&c, HistoryRange::After(0), 100)
        .await
        .unwrap();
    assert_eq!(page.messages.first().unwrap().seq, 11);
    assert_eq!(page.messages.len(), 16);
    let next = store
        .append(request(c, 4, "after-prune", "x"))
        .await
        .unwrap();
    assert_eq!(next.seq, 27);
    assert_eq!(
        store.first_seq_since(&c, 0).await.unwrap(),
        Some(11),
        "the oldest message still stored"
    );
    assert_eq!(
        store.first_seq_since(&c, u64::MAX >> 2).await.unwrap(),
        None
    );
    let all = store.all_conversations().await.unwrap();
    assert_eq!(all, vec![(c, 27)]);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_write_to_a_group_and_removal_takes_effect_at_once() {
    let server = PgServer::start();
    let store = open(&server).await;
    let (client, connection) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO group_members (group_id, user_id) VALUES (7, 1), (7, 2)",
            &[],
        )
        .await
        .unwrap();
    let g = ConversationId::Group(7);
    store.append(request(g, 1, "a", "hi")).await.unwrap();
    assert!(matches!(
        store.append(request(g, 3, "b", "let me in")).await,
        Err(StorageError::NotParticipant)
    ));
    client
        .execute(
            "DELETE FROM group_members WHERE group_id = 7 AND user_id = 2",
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        store.append(request(g, 2, "c", "still here?")).await,
        Err(StorageError::NotParticipant)
    ));
    assert_eq!(store.last_seq(&g).await.unwrap(), 1);
    store.shutdown().await.unwrap();
}

/// A server restart fails the appends made while it is down with a retryable
/// error (nothing stored), and the committers reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_retryably_while_the_server_is_down_and_resume_after() {
    let server = PgServer::start();
    let mut config = PgConfig::new(&server.url);
    config.committers = 1;
    config.read_sessions = 1;
    let store = PgStore::open(config, None).await.unwrap();
    let c = ConversationId::direct(5, 6).unwrap();
    store.append(request(c, 5, "before", "x")).await.unwrap();
    server.stop();
    let e = store
        .append(request(c, 5, "during", "x"))
        .await
        .expect_err("the server is down");
    assert!(e.is_unavailable(), "{e:?} should say: try again later");
    server.start_again();
    let mut stored = None;
    for _ in 0..50 {
        match store.append(request(c, 5, "during", "x")).await {
            Ok(a) => {
                stored = Some(a);
                break;
            }
            Err(e) if e.is_unavailable() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let stored = stored.expect("stored once the server is back");
    assert_eq!((stored.seq, stored.duplicate), (2, false));
    assert_eq!(store.last_seq(&c).await.unwrap(), 2);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_hears_each_committed_message_once() {
    struct Heard(std::sync::Mutex<Vec<u64>>);
    impl courier_storage::CommitListener for Heard {
        fn committed(
            &self,
            messages: &[courier_storage::StoredMessage],
            _: Option<&courier_storage::MembershipChange>,
        ) {
            self.0
                .lock()
                .unwrap()
                .extend(messages.iter().map(|m| m.seq));
        }
    }
    let server = PgServer::start();
    let heard = Arc::new(Heard(Default::default()));
    let store = PgStore::open(PgConfig::new(&server.url), Some(heard.clone()))
        .await
        .unwrap();
    let c = ConversationId::direct(8, 9).unwrap();
    for i in 0..20 {
        store
            .append(request(c, 8, &format!("m{i}"), "x"))
            .await
            .unwrap();
    }
    store.append(request(c, 8, "m3", "resend")).await.unwrap();
    let seqs = heard.0.lock().unwrap().clone();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(seqs.iter().collect::<HashSet<_>>().len(), 20);
    store.shutdown().await.unwrap();
}
