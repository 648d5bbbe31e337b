//! Relations on a real PostgreSQL server: the shared rules, both sides at once,
//! and concurrent changes of one pair through two stores.

mod common;

use common::PgServer;
use courier_storage::{RelationChange, RelationRefusal, RelationSet, Relations, RequestOutcome};
use courier_storage_pg::{PgConfig, PgStore};

async fn open(server: &PgServer) -> PgStore {
    PgStore::open(PgConfig::new(&server.url), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_follow_the_rules_on_both_sides() {
    let server = PgServer::start();
    let store = open(&server).await;
    let (a, b, c) = (10u64, 20u64, 30u64);
    assert_eq!(
        store
            .change_relation(a, a, RelationChange::Request)
            .await
            .unwrap(),
        Err(RelationRefusal::SelfRelation)
    );
    let asked = store
        .change_relation(a, b, RelationChange::Request)
        .await
        .unwrap();
    assert_eq!(asked, Ok(Some(RequestOutcome::Pending)));
    let pending = store
        .relations(b, 0, 10, RelationSet::RequestsReceived)
        .await
        .unwrap();
    assert_eq!(pending.iter().map(|p| p.0).collect::<Vec<_>>(), [a]);
    store
        .change_relation(b, a, RelationChange::Accept)
        .await
        .unwrap()
        .unwrap();
    assert!(store.relation(a, b).await.unwrap().friend);
    assert!(store.relation(b, a).await.unwrap().friend);
    store
        .change_relation(c, a, RelationChange::Block(true))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .change_relation(a, c, RelationChange::Request)
            .await
            .unwrap(),
        Err(RelationRefusal::Blocked)
    );
    assert!(store.relation(a, c).await.unwrap().blocked_by);
    let friends = store
        .relations(a, 0, 10, RelationSet::Friends)
        .await
        .unwrap();
    assert_eq!(friends.iter().map(|p| p.0).collect::<Vec<_>>(), [b]);
    assert_eq!(store.befriend_many(c, &[a, b, b, c]).await.unwrap(), 1);
    assert!(store.relation(b, c).await.unwrap().friend);
    // Unblocking and unfollowing leave nothing: the views are gone.
    store
        .change_relation(c, a, RelationChange::Block(false))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.relation(a, c).await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_audience_skips_blocked_friends_and_pages_by_peer_id() {
    let server = PgServer::start();
    let store = open(&server).await;
    let user = 1u64;
    let peers: Vec<u64> = (2..=40).collect();
    assert_eq!(
        store.befriend_many(user, &peers).await.unwrap(),
        peers.len()
    );
    // Every other friend blocks the user: still friends, not told of presence.
    for &p in peers.iter().step_by(2) {
        store
            .change_relation(p, user, RelationChange::Block(true))
            .await
            .unwrap()
            .unwrap();
    }
    let mut audience = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .relations(
                user,
                after,
                7,
                RelationSet::PresenceAudience { followers: false },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().0;
        audience.extend(page.into_iter().map(|p| p.0));
    }
    let expected: Vec<u64> = peers.iter().copied().skip(1).step_by(2).collect();
    assert_eq!(audience, expected);
    let friends = store
        .relations(user, 0, 100, RelationSet::Friends)
        .await
        .unwrap();
    assert_eq!(friends.len(), peers.len());
}

/// Two gateways answer each other's friend requests at the same moment: the pair
/// ends up friends, both sides agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_requests_through_two_stores_make_friends_once() {
    let server = PgServer::start();
    let one = open(&server).await;
    let two = open(&server).await;
    for pair in 0..20u64 {
        let (a, b) = (100 + 2 * pair, 101 + 2 * pair);
        let (x, y) = tokio::join!(
            one.change_relation(a, b, RelationChange::Request),
            two.change_relation(b, a, RelationChange::Request)
        );
        let outcomes = [x.unwrap().unwrap(), y.unwrap().unwrap()];
        assert!(
            outcomes.contains(&Some(RequestOutcome::Friends)),
            "{outcomes:?}"
        );
        let (ra, rb) = (
            one.relation(a, b).await.unwrap(),
            two.relation(b, a).await.unwrap(),
        );
        assert!(ra.friend && rb.friend);
        assert!(!(ra.request_sent || ra.request_received || rb.request_sent));
    }
}
