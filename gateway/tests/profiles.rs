//! Profiles and user search against a real gateway: status, custom fields and the
//! discoverable flag; a change reaching an online friend through presence; search
//! by exact name and display-name prefix, paged, never across a block nor to a user
//! that is not discoverable.

mod common;

use common::{TestServer, WAIT};
use courier_sdk::{Event, Events};
use serde_json::json;

/// The next presence change about `user` that says its profile changed.
async fn profile_notice(events: &mut Events, user: u64) {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Presence(batch))) => {
                if batch
                    .changes
                    .iter()
                    .any(|c| c.user_id == user && c.profile_changed)
                {
                    return;
                }
            }
            Ok(Some(Event::Closed)) | Ok(None) => panic!("closed"),
            Ok(Some(_)) => continue,
            Err(_) => panic!("no profile notice within {WAIT:?}"),
        }
    }
}

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_reach_friends_and_search_respects_blocks_and_discoverability() {
    let t = TestServer::start().await;
    let (alice, bob, carol) = (
        t.user("alice").await,
        t.user("bob").await,
        t.user("carol").await,
    );
    let api = t.server.api();
    api.import_friendships(alice.user_id, vec![bob.user_id])
        .await
        .unwrap();
    let (_a, _ae) = t.connect(&alice, "phone").await;
    let (_b, mut bob_events) = t.connect(&bob, "phone").await;
    let (alice_http, bob_http, carol_http) =
        (t.http_as(&alice), t.http_as(&bob), t.http_as(&carol));

    // A profile change: stored, shown, and told to the online friend.
    let me = alice_http
        .update_profile(&json!({
            "display_name": "Zed Alpha",
            "status": "on holiday",
            "custom": {"city": "Lyon", "team": "blue"},
        }))
        .await
        .unwrap();
    assert_eq!(me.status.as_deref(), Some("on holiday"));
    assert_eq!(me.discoverable, Some(true));
    profile_notice(&mut bob_events, alice.user_id).await;
    let seen = bob_http.user("alice").await.unwrap();
    assert_eq!(seen.display_name.as_deref(), Some("Zed Alpha"));
    assert_eq!(seen.custom.unwrap()["city"], "Lyon");
    assert_eq!(seen.discoverable, None, "only to the user itself");
    // Fields left out stay; a status too long is refused.
    alice_http
        .update_profile(&json!({"status": "back"}))
        .await
        .unwrap();
    let me = alice_http.me().await.unwrap();
    assert_eq!(
        (me.display_name.as_deref(), me.status.as_deref()),
        (Some("Zed Alpha"), Some("back"))
    );
    let refused = alice_http
        .update_profile(&json!({"status": "x".repeat(141)}))
        .await
        .unwrap_err();
    assert_eq!(common::http_code(&refused).0, 400);

    // Search: by display-name prefix (any case), paged.
    carol_http
        .update_profile(&json!({"display_name": "zed alvin"}))
        .await
        .unwrap();
    bob_http
        .update_profile(&json!({"display_name": "Zed Bob"}))
        .await
        .unwrap();
    let found = bob_http.search_users("ZED AL", None, None).await.unwrap();
    assert_eq!(ids(&found), [alice.user_id, carol.user_id]);
    let first = bob_http
        .search_users("zed al", None, Some(1))
        .await
        .unwrap();
    assert_eq!(ids(&first), [alice.user_id]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let rest = bob_http
        .search_users("zed al", Some(&cursor), Some(1))
        .await
        .unwrap();
    assert_eq!(ids(&rest), [carol.user_id]);
    // By exact name, first.
    let exact = bob_http.search_users("carol", None, None).await.unwrap();
    assert_eq!(ids(&exact), [carol.user_id]);
    // Not discoverable: found by nobody, by name or prefix.
    carol_http
        .update_profile(&json!({"discoverable": false}))
        .await
        .unwrap();
    assert_eq!(
        ids(&bob_http.search_users("zed al", None, None).await.unwrap()),
        [alice.user_id]
    );
    assert!(ids(&bob_http.search_users("carol", None, None).await.unwrap()).is_empty());
    // A block either way hides the user.
    alice_http.set_block(bob.user_id, true).await.unwrap();
    assert!(ids(&bob_http.search_users("zed al", None, None).await.unwrap()).is_empty());
    assert!(ids(&alice_http
        .search_users("zed bob", None, None)
        .await
        .unwrap())
    .is_empty());
    // Too short a query.
    let short = bob_http.search_users("z", None, None).await.unwrap_err();
    assert_eq!(common::http_code(&short).0, 400);
    t.stop().await;
}

/// The next presence change that says a profile changed.
async fn next_profile_change(events: &mut Events) -> courier_sdk::pb::PresenceChange {
    loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Presence(batch))) => {
                if let Some(c) = batch.changes.into_iter().find(|c| c.profile_changed) {
                    return c;
                }
            }
            Ok(Some(Event::Closed)) | Ok(None) => panic!("closed"),
            Ok(Some(_)) => continue,
            Err(_) => panic!("no profile notice within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_changes_reach_fellow_group_members_without_presence() {
    let t = TestServer::start().await;
    let p = common::users(&t, "pg", 3).await;
    let (alice, friend, member) = (&p[0], &p[1], &p[2]);
    let api = t.server.api();
    api.import_friendships(alice.user_id, vec![friend.user_id])
        .await
        .unwrap();
    t.http_as(alice)
        .create_group(&courier_sdk::NewGroup {
            name: "club".into(),
            members: vec![friend.user_id, member.user_id],
            ..Default::default()
        })
        .await
        .unwrap();
    let (_a, _ae) = t.connect(alice, "phone").await;
    let (_f, mut friend_events) = t.connect(friend, "phone").await;
    let (_m, mut member_events) = t.connect(member, "phone").await;

    t.http_as(alice)
        .update_profile(&json!({"status": "new status"}))
        .await
        .unwrap();
    // The friend: with alice's presence (she is online), though it is a fellow
    // member too. The other member: the profile alone, nothing of her presence.
    let to_friend = next_profile_change(&mut friend_events).await;
    assert_eq!(to_friend.user_id, alice.user_id);
    assert!(to_friend.online && !to_friend.profile_only, "{to_friend:?}");
    let to_member = next_profile_change(&mut member_events).await;
    assert_eq!(to_member.user_id, alice.user_id);
    assert!(!to_member.online && to_member.profile_only, "{to_member:?}");
    // A display-name change goes the same way.
    t.http_as(alice)
        .update_profile(&json!({"display_name": "Alice A."}))
        .await
        .unwrap();
    let again = next_profile_change(&mut member_events).await;
    assert!(again.user_id == alice.user_id && again.profile_only);
}
