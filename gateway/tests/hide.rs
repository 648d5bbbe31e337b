//! Delete for me, clear history and delete a conversation against a real gateway:
//! one user's view changes on all its devices (live, and by sync for a device
//! that was away), nobody else's.

mod common;

use common::{next_message, TestServer, WAIT};
use courier_sdk::pb;
use courier_sdk::{ConversationId, ErrorCode, Event, Events};

/// The next `Hidden` notice, skipping other events.
async fn next_hidden(events: &mut Events) -> pb::Hidden {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Hidden(h))) => return h,
            Ok(Some(Event::Closed)) | Ok(None) => panic!("closed"),
            Ok(Some(_)) => continue,
            Err(_) => panic!("no Hidden notice within {WAIT:?}"),
        }
    }
}

fn seqs(page: &pb::HistoryPage) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_for_me_changes_only_my_view_on_all_my_devices() {
    let t = TestServer::start().await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, _ae) = t.connect(&alice, "phone").await;
    let (_a2, mut a2_events) = t.connect(&alice, "laptop").await;
    let (b, mut b_events) = t.connect(&bob, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for i in 1..=5 {
        a.send_text(&c, format!("m{i}")).await.unwrap();
        next_message(&mut b_events).await;
        next_message(&mut a2_events).await;
    }
    // A tablet that synced now and goes away.
    let (tablet, _te) = t.connect(&alice, "tablet").await;
    tablet.sync(vec![]).await.unwrap();
    let tablet_version = tablet.view_version();
    drop(tablet);

    let hidden = a.hide(&c, vec![2, 4], 0, false).await.unwrap();
    assert_eq!(
        (hidden.seqs.as_slice(), hidden.cleared_seq),
        (&[2, 4][..], 0)
    );
    // The laptop is told at once; the phone that asked is answered instead.
    let notice = next_hidden(&mut a2_events).await;
    assert_eq!(notice.seqs, [2, 4]);
    // Alice's history leaves them out, Bob's does not.
    let page = a
        .pull_history(&c, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&page), [1, 3, 5]);
    let page = b
        .pull_history(&c, pb::Direction::Forward, 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&page), [1, 2, 3, 4, 5]);
    // The tablet, back with its old view version and cursor, learns of it in sync.
    let (tablet, _te) = t.connect(&alice, "tablet").await;
    tablet.set_view_version(tablet_version);
    let sync = tablet
        .sync(vec![pb::Cursor {
            conversation: c.to_string(),
            seq: 5,
        }])
        .await
        .unwrap();
    let state = sync
        .conversations
        .iter()
        .find(|s| s.conversation == c.to_string())
        .expect("listed for its changed view, without new messages");
    assert_eq!(state.hidden, [2, 4]);
    assert!(sync.view_version > tablet_version);
    // Synced again from the new version: nothing to tell.
    let again = tablet
        .sync(vec![pb::Cursor {
            conversation: c.to_string(),
            seq: 5,
        }])
        .await
        .unwrap();
    assert!(again.conversations.is_empty(), "{again:?}");

    // Clear through 3: Alice sees only 5 (4 was hidden), and nothing unread.
    let http = t.http_as(&alice);
    let cleared = http.hide(&c, &[], 3).await.unwrap();
    assert_eq!(cleared["cleared_seq"], 3);
    assert_eq!(next_hidden(&mut a2_events).await.cleared_seq, 3);
    let page = a
        .pull_history(&c, pb::Direction::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&page), [5]);
    let page = b
        .pull_history(&c, pb::Direction::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&page).len(), 5);

    // Delete the conversation: gone from Alice's list, still in Bob's; the next
    // message brings it back, with only what came after.
    http.delete_conversation(&c).await.unwrap();
    let listed = |list: courier_sdk::ConversationList| {
        list.conversations
            .iter()
            .any(|e| e.conversation == c.to_string())
    };
    assert!(!listed(http.conversations(None, None).await.unwrap()));
    assert!(listed(
        t.http_as(&bob).conversations(None, None).await.unwrap()
    ));
    b.send_text(&c, "still there?").await.unwrap();
    let list = http.conversations(None, None).await.unwrap();
    assert!(listed(list.clone()));
    let entry = list
        .conversations
        .iter()
        .find(|e| e.conversation == c.to_string())
        .unwrap();
    assert_eq!(entry.unread, 1);
    let page = a
        .pull_history(&c, pb::Direction::Backward, 0, 10)
        .await
        .unwrap();
    assert_eq!(seqs(&page), [6]);

    // Limits: a seq past the log, a stranger's conversation.
    assert_eq!(
        a.hide(&c, vec![99], 0, false).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    let carol = t.user("carol").await;
    let (cc, _ce) = t.connect(&carol, "phone").await;
    assert_eq!(
        cc.hide(&c, vec![1], 0, false).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    let d = ConversationId::direct(alice.user_id, carol.user_id).unwrap();
    assert_eq!(cc.hide(&d, vec![], 0, true).await.unwrap().cleared_seq, 0);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_hidden_whole_gives_way_to_the_next() {
    let t = TestServer::start().await;
    let (alice, bob) = (t.user("alice").await, t.user("bob").await);
    let (a, _ae) = t.connect(&alice, "phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for i in 1..=6 {
        a.send_text(&c, format!("m{i}")).await.unwrap();
    }
    a.hide(&c, vec![3, 4, 5, 6], 0, false).await.unwrap();
    let page = a
        .pull_history(&c, pb::Direction::Backward, 0, 2)
        .await
        .unwrap();
    assert_eq!(seqs(&page), [1, 2]);
    let page = a
        .pull_history(&c, pb::Direction::Forward, 2, 2)
        .await
        .unwrap();
    assert!(page.messages.is_empty() && !page.has_more, "{page:?}");
    t.stop().await;
}
