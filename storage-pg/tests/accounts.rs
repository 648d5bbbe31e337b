//! Accounts and login tokens on a real PostgreSQL server, by the same rules as the
//! embedded store.

mod common;

use common::PgServer;
use courier_storage::{token_hash, Accounts, PasswordParams, StorageError, Tokens};
use courier_storage_pg::{PgConfig, PgStore};

async fn open(server: &PgServer) -> PgStore {
    let mut config = PgConfig::new(&server.url);
    config.password = PasswordParams::insecure_fast();
    PgStore::open(config, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_register_log_in_and_change_passwords() {
    let server = PgServer::start();
    let store = open(&server).await;
    let alice = store.register("alice", "correct horse").await.unwrap();
    assert!(alice.id > 0);
    assert!(matches!(
        store.register("alice", "another one").await,
        Err(StorageError::NameTaken)
    ));
    assert!(matches!(
        store.register("Alice", "correct horse").await,
        Err(StorageError::InvalidName(_))
    ));
    assert!(matches!(
        store.register("bob", "short").await,
        Err(StorageError::InvalidPassword(_))
    ));
    assert_eq!(store.account(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.account_by_name("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(store.account_by_name("nobody").await.unwrap(), None);

    // Unknown names and wrong passwords fail alike.
    assert!(matches!(
        store.login("alice", "wrong horse").await,
        Err(StorageError::BadCredentials)
    ));
    assert!(matches!(
        store.login("nobody", "correct horse").await,
        Err(StorageError::BadCredentials)
    ));
    let first = store.login("alice", "correct horse").await.unwrap();
    let second = store.login("alice", "correct horse").await.unwrap();
    let info = store.token_info(&first.token).await.unwrap().unwrap();
    assert_eq!(info.user_id, alice.id);
    assert_eq!(info.hash, token_hash(&first.token));
    assert_eq!(store.token_info("not a token").await.unwrap(), None);

    // A password change keeps the caller's token and revokes the others, together.
    let keep = token_hash(&second.token);
    let revoked = store
        .change_password("alice", "correct horse", "battery staple", &keep)
        .await
        .unwrap();
    assert_eq!(revoked, vec![token_hash(&first.token)]);
    assert_eq!(store.token_info(&first.token).await.unwrap(), None);
    assert!(store.token_info(&second.token).await.unwrap().is_some());
    assert!(store.login("alice", "correct horse").await.is_err());
    assert!(store.login("alice", "battery staple").await.is_ok());
    assert!(matches!(
        store
            .change_password("alice", "not it at all", "whatever123", &keep)
            .await,
        Err(StorageError::BadCredentials)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_revoked_one_by_one_all_at_once_and_swept_when_expired() {
    let server = PgServer::start();
    let store = open(&server).await;
    let bob = store.register("bob", "bob's password").await.unwrap();
    let a = store.login("bob", "bob's password").await.unwrap();
    let b = store.login("bob", "bob's password").await.unwrap();
    let c = store.login("bob", "bob's password").await.unwrap();
    assert!(store
        .revoke_token_hash(&token_hash(&a.token))
        .await
        .unwrap());
    assert!(!store
        .revoke_token_hash(&token_hash(&a.token))
        .await
        .unwrap());
    let keep = token_hash(&c.token);
    let revoked = store.revoke_user_tokens(bob.id, Some(&keep)).await.unwrap();
    assert_eq!(revoked, vec![token_hash(&b.token)]);
    assert!(store.token_info(&c.token).await.unwrap().is_some());
    // Expired (as of a time past its expiry): no longer valid, then swept.
    assert_eq!(
        store.sweep_expired_tokens(c.expires_ms - 1).await.unwrap(),
        0
    );
    assert_eq!(store.sweep_expired_tokens(c.expires_ms).await.unwrap(), 1);
    assert_eq!(store.token_info(&c.token).await.unwrap(), None);
    assert!(store
        .revoke_user_tokens(bob.id, None)
        .await
        .unwrap()
        .is_empty());
}
