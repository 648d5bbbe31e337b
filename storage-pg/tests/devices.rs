//! Device bindings on a real PostgreSQL server.

mod common;

use common::PgServer;
use courier_storage::{Accounts, Devices, PasswordParams, Tokens, MAX_DEVICE_TOKENS};
use courier_storage_pg::{PgConfig, PgStore};

async fn open(server: &PgServer) -> PgStore {
    let mut config = PgConfig::new(&server.url);
    config.password = PasswordParams::insecure_fast();
    PgStore::open(config, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_list_unbind_and_keep_the_newest_tokens() {
    let server = PgServer::start();
    let s = open(&server).await;
    s.bind_device(1, "phone", 1, 10, Some(&[1; 32]))
        .await
        .unwrap();
    s.bind_device(1, "laptop", 4, 20, None).await.unwrap();
    let again = s
        .bind_device(1, "phone", 1, 30, Some(&[1; 32]))
        .await
        .unwrap();
    assert_eq!(
        (again.device.first_seen_ms, again.device.last_seen_ms),
        (10, 30)
    );
    assert_eq!(again.device.tokens, vec![[1; 32]]);
    let ids: Vec<String> = s
        .devices(1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, vec!["laptop", "phone"], "least recently seen first");
    assert!(s.unbind_device(1, "laptop").await.unwrap().is_some());
    assert!(s.unbind_device(1, "laptop").await.unwrap().is_none());
    for t in 2..=MAX_DEVICE_TOKENS as u8 {
        let bound = s
            .bind_device(1, "phone", 1, 40, Some(&[t; 32]))
            .await
            .unwrap();
        assert_eq!(bound.evicted, None);
    }
    let bound = s
        .bind_device(1, "phone", 1, 50, Some(&[99; 32]))
        .await
        .unwrap();
    assert_eq!(bound.evicted, Some([1; 32]), "the oldest gives way");
    assert_eq!(bound.device.tokens.len(), MAX_DEVICE_TOKENS);
    assert!(s.devices(2).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_device_revokes_the_tokens_it_used_only() {
    let server = PgServer::start();
    let s = open(&server).await;
    let carol = s.register("carol", "carol's password").await.unwrap();
    let phone = s.login("carol", "carol's password").await.unwrap();
    let laptop = s.login("carol", "carol's password").await.unwrap();
    let hash = |t: &str| courier_storage::token_hash(t);
    s.bind_device(carol.id, "phone", 1, 1, Some(&hash(&phone.token)))
        .await
        .unwrap();
    s.bind_device(carol.id, "laptop", 4, 2, Some(&hash(&laptop.token)))
        .await
        .unwrap();
    let removed = s.remove_device(carol.id, "phone").await.unwrap().unwrap();
    assert_eq!(removed.tokens, vec![hash(&phone.token)]);
    assert_eq!(s.token_info(&phone.token).await.unwrap(), None);
    assert!(s.token_info(&laptop.token).await.unwrap().is_some());
    assert!(s.remove_device(carol.id, "phone").await.unwrap().is_none());
    // Unbinding (the device cap) keeps the tokens valid.
    s.unbind_device(carol.id, "laptop").await.unwrap().unwrap();
    assert!(s.token_info(&laptop.token).await.unwrap().is_some());
}
