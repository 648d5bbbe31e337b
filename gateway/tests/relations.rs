//! Friends, follows and blocks over the HTTP API, and what blocks do to messaging.

mod common;

use common::TestServer;
use courier_sdk::{ErrorCode, SdkError};

fn http_code(e: SdkError) -> (u16, Option<ErrorCode>) {
    match &e {
        SdkError::Http { status, .. } => (*status, e.code()),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friendship_life_cycle() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    let (a, b, c) = (t.http_as(&alice), t.http_as(&bob), t.http_as(&carol));

    // Request, then see it from both sides.
    let r = a.request_friend(bob.user_id).await.unwrap();
    assert!(r.request_sent && !r.friend);
    assert_eq!(b.friend_requests().await.unwrap().incoming[0].name, "alice");
    assert_eq!(
        a.friend_requests().await.unwrap().outgoing[0].user_id,
        bob.user_id
    );
    // Asking again is harmless; accepting one's own request is not possible.
    assert!(a.request_friend(bob.user_id).await.unwrap().request_sent);
    assert_eq!(
        http_code(a.accept_friend(bob.user_id).await.unwrap_err()),
        (404, Some(ErrorCode::NotFound))
    );

    // Accept: friends both ways, with names in the list.
    let r = b.accept_friend(alice.user_id).await.unwrap();
    assert!(r.friend);
    let friends = a.friends(None).await.unwrap();
    assert_eq!(friends.users.len(), 1);
    assert_eq!(
        (friends.users[0].user_id, friends.users[0].name.as_str()),
        (bob.user_id, "bob")
    );
    assert_eq!(
        http_code(b.request_friend(alice.user_id).await.unwrap_err()),
        (409, Some(ErrorCode::AlreadyExists))
    );

    // Remove: gone on both sides.
    a.remove_friend(bob.user_id).await.unwrap();
    assert!(b.friends(None).await.unwrap().users.is_empty());
    assert_eq!(
        http_code(a.remove_friend(bob.user_id).await.unwrap_err()),
        (404, Some(ErrorCode::NotFound))
    );

    // Decline and cancel.
    c.request_friend(alice.user_id).await.unwrap();
    a.decline_friend(carol.user_id).await.unwrap();
    assert!(a.friend_requests().await.unwrap().incoming.is_empty());
    c.request_friend(alice.user_id).await.unwrap();
    c.cancel_friend_request(alice.user_id).await.unwrap();
    assert!(a.friend_requests().await.unwrap().incoming.is_empty());
    assert_eq!(
        http_code(a.accept_friend(carol.user_id).await.unwrap_err()),
        (404, Some(ErrorCode::NotFound))
    );

    // Crossing requests become a friendship.
    c.request_friend(bob.user_id).await.unwrap();
    assert!(b.request_friend(carol.user_id).await.unwrap().friend);

    // One-way follow.
    a.set_follow(carol.user_id, true).await.unwrap();
    assert_eq!(
        c.followers(None).await.unwrap().users[0].user_id,
        alice.user_id
    );
    assert!(!c.relation(alice.user_id).await.unwrap().following);
    assert_eq!(a.following(None).await.unwrap().users.len(), 1);

    // Errors: self, unknown users.
    assert_eq!(
        http_code(a.request_friend(alice.user_id).await.unwrap_err()),
        (400, Some(ErrorCode::InvalidArgument))
    );
    assert_eq!(
        http_code(a.request_friend(999_999).await.unwrap_err()),
        (404, Some(ErrorCode::UnknownUser))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_message_or_befriend() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, b) = (t.http_as(&alice), t.http_as(&bob));
    let (bob_client, _e) = t.connect(&bob, "bob-phone").await;
    let c = bob_client.direct_with(alice.user_id).unwrap();
    bob_client.send_text(&c, "hi").await.unwrap();

    a.set_block(bob.user_id, true).await.unwrap();
    assert_eq!(a.blocks(None).await.unwrap().users[0].user_id, bob.user_id);
    let err = bob_client
        .send_text(&c, "are you there?")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Blocked));
    assert_eq!(
        http_code(b.request_friend(alice.user_id).await.unwrap_err()),
        (403, Some(ErrorCode::Blocked))
    );
    assert_eq!(
        http_code(b.set_follow(alice.user_id, true).await.unwrap_err()),
        (403, Some(ErrorCode::Blocked))
    );

    a.set_block(bob.user_id, false).await.unwrap();
    assert_eq!(bob_client.send_text(&c, "again").await.unwrap().seq, 2);
    t.stop().await;
}
