//! The gateway on the PostgreSQL backend (`storage_backend = "postgres"`), against a
//! real PostgreSQL server: the SDK's flows end to end, and two gateway processes'
//! worth of servers sharing one database (accounts, seqs and history are one).
//! These gateways are not a cluster (no NATS): the other gateway's user reads what
//! was sent through history. Live delivery between gateways is in `cluster.rs`.

mod common;
#[path = "../../storage-pg/tests/common/mod.rs"]
mod pg;

use common::{next_message, TestServer};
use courier_gateway::config::StorageBackend;
use courier_sdk::pb;

async fn gateway(db: &pg::PgServer) -> TestServer {
    let url = db.url.clone();
    TestServer::start_with(move |c| {
        c.storage_backend = StorageBackend::Postgres;
        c.postgres_url = url;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_and_history_is_served_from_postgres() {
    let db = pg::PgServer::start();
    let t = gateway(&db).await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let (a, _a_events) = t.connect(&alice, "alice-phone").await;
    let (_b, mut b_events) = t.connect(&bob, "bob-phone").await;
    let c = a.direct_with(bob.user_id).unwrap();
    for i in 0..30 {
        let ack = a
            .send(
                &c,
                pb::MessageBody::text(format!("hello {i}")),
                courier_sdk::new_client_msg_id(),
            )
            .await
            .unwrap();
        assert_eq!(ack.seq, i + 1);
    }
    for i in 0..30 {
        let m = next_message(&mut b_events).await;
        assert_eq!(m.seq, i + 1);
    }
    let history = t.http_as(&bob).history_all(&c, 0).await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|m| m.text.clone().unwrap())
            .collect::<Vec<_>>(),
        (0..30).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_database_share_accounts_seqs_and_history() {
    let db = pg::PgServer::start();
    let one = gateway(&db).await;
    let two = gateway(&db).await;
    let alice = one.user("alice").await;
    // Registered on one gateway, logging in on the other.
    let alice_on_two = two.http.login("alice", "password123").await.unwrap();
    assert_eq!(alice_on_two.user_id, alice.user_id);
    let carol = two.user("carol").await;
    let (a1, _e1) = one.connect(&alice, "alice-phone").await;
    let (a2, _e2) = two.connect(&alice_on_two, "alice-laptop").await;
    let c = a1.direct_with(carol.user_id).unwrap();
    // Alice's two devices, on two gateways, send into one conversation at once.
    let (x, y) = tokio::join!(
        async {
            let mut seqs = Vec::new();
            for i in 0..20 {
                seqs.push(
                    a1.send(
                        &c,
                        pb::MessageBody::text(format!("one {i}")),
                        courier_sdk::new_client_msg_id(),
                    )
                    .await
                    .unwrap()
                    .seq,
                );
            }
            seqs
        },
        async {
            let mut seqs = Vec::new();
            for i in 0..20 {
                seqs.push(
                    a2.send(
                        &c,
                        pb::MessageBody::text(format!("two {i}")),
                        courier_sdk::new_client_msg_id(),
                    )
                    .await
                    .unwrap()
                    .seq,
                );
            }
            seqs
        }
    );
    let mut all: Vec<u64> = x.iter().chain(&y).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=40).collect::<Vec<_>>(),
        "gap-free across gateways"
    );
    let on_one = one.http_as(&carol).history_all(&c, 0).await.unwrap();
    let on_two = two.http_as(&carol).history_all(&c, 0).await.unwrap();
    assert_eq!(on_one.len(), 40);
    assert_eq!(
        on_one
            .iter()
            .map(|m| (m.seq, m.text.clone()))
            .collect::<Vec<_>>(),
        on_two
            .iter()
            .map(|m| (m.seq, m.text.clone()))
            .collect::<Vec<_>>()
    );
    one.stop().await;
    two.stop().await;
}
