//! The per-user conversation index on a real PostgreSQL server.

mod common;

use bytes::Bytes;
use common::PgServer;
use courier_protocol::ConversationId;
use courier_storage::{AppendRequest, ConversationIndex, MessageLog, StorageError};
use courier_storage_pg::{PgConfig, PgStore};

fn send(c: ConversationId, sender: u64, id: &str) -> AppendRequest {
    AppendRequest {
        conversation: c,
        sender,
        sender_device: "dev".into(),
        client_msg_id: id.into(),
        body: Bytes::from_static(b"hello"),
        reply_to_seq: 0,
        recalls: 0,
        mentions: Vec::new(),
        edits: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_cursors_and_flags() {
    let server = PgServer::start();
    let store = PgStore::open(PgConfig::new(&server.url), None)
        .await
        .unwrap();
    let ab = ConversationId::direct(1, 2).unwrap();
    let ac = ConversationId::direct(1, 3).unwrap();
    // The first message puts the conversation in both lists.
    for i in 0..5 {
        store.append(send(ab, 1, &format!("ab{i}"))).await.unwrap();
    }
    store.append(send(ac, 3, "ac0")).await.unwrap();
    let list = store.conversations(1).await.unwrap();
    let convs: Vec<_> = list.iter().map(|u| u.conversation).collect();
    assert_eq!(convs, vec![ac, ab], "most recently active first");
    assert_eq!(list[1].last_seq, 5);
    assert_eq!(store.conversations(2).await.unwrap().len(), 1);
    assert!(store.conversations(4).await.unwrap().is_empty());

    // What a user sends, they have read; the other side has not.
    assert_eq!(
        store
            .conversation_state(1, &ab)
            .await
            .unwrap()
            .unwrap()
            .read_seq,
        5
    );
    assert_eq!(
        store
            .conversation_state(2, &ab)
            .await
            .unwrap()
            .unwrap()
            .read_seq,
        0
    );
    // Cursors move forward only, and never past the last seq.
    assert_eq!(store.mark_read(2, &ab, 3).await.unwrap(), 3);
    assert_eq!(store.mark_read(2, &ab, 2).await.unwrap(), 3);
    assert_eq!(store.mark_read(2, &ab, 99).await.unwrap(), 5);
    assert_eq!(store.note_delivered(2, &ab, 4).await.unwrap(), 4);
    assert_eq!(store.note_delivered(2, &ab, 1).await.unwrap(), 4);
    let state = store.conversation_state(2, &ab).await.unwrap().unwrap();
    assert_eq!((state.read_seq, state.delivered_seq), (5, 4));
    // Strangers have no entry to move.
    assert!(matches!(
        store.mark_read(3, &ab, 1).await,
        Err(StorageError::NotParticipant)
    ));
    assert!(matches!(
        store.set_conversation_flags(3, &ab, Some(true), None).await,
        Err(StorageError::NotParticipant)
    ));
    let flagged = store
        .set_conversation_flags(2, &ab, Some(true), None)
        .await
        .unwrap();
    assert!(flagged.muted && !flagged.pinned);
    let flagged = store
        .set_conversation_flags(2, &ab, None, Some(true))
        .await
        .unwrap();
    assert!(flagged.muted && flagged.pinned);
    assert_eq!(flagged.read_seq, 5);
    store.shutdown().await.unwrap();
}
