//! The storage conformance suite (`conformance/`) against the embedded sled store,
//! reached only through `Arc<dyn Storage>`.

mod conformance;

use std::sync::Arc;

use courier_storage::{Storage, Store, StoreConfig};

fn open(dir: &std::path::Path) -> Arc<dyn Storage> {
    let mut config = StoreConfig::for_tests(dir);
    config.shards = 3;
    Arc::new(Store::open(config, None).unwrap())
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            conformance::$check(store.as_ref(), "t").await;
            store.shutdown().await.unwrap();
        }
    )*};
}

conformance!(
    appends_are_ordered_gap_free_and_idempotent,
    a_recall_erases_and_stores_its_event,
    edits_mark_their_target_and_go_with_a_recall,
    reactions_are_counted_with_their_event,
    mentions_are_counted_per_reader,
    hiding_and_clearing_are_per_user,
    mutes_refuse_sends_in_order,
    bans_keep_users_out,
    profiles_and_display_name_search,
    cursors_and_flags,
    accounts_and_tokens,
    devices_bind_and_remove,
    relations_follow_the_rules,
    groups_change_with_their_events,
    media_records,
    retention_prunes_history,
    shutdown_refuses_later_writes,
);

/// All checks against one store, concurrently, as a server would call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = store.as_ref();
    tokio::join!(
        conformance::appends_are_ordered_gap_free_and_idempotent(s, "c1"),
        conformance::a_recall_erases_and_stores_its_event(s, "c2"),
        conformance::edits_mark_their_target_and_go_with_a_recall(s, "c11"),
        conformance::reactions_are_counted_with_their_event(s, "c12"),
        conformance::mentions_are_counted_per_reader(s, "c13"),
        conformance::hiding_and_clearing_are_per_user(s, "c14"),
        conformance::mutes_refuse_sends_in_order(s, "c15"),
        conformance::bans_keep_users_out(s, "c17"),
        conformance::profiles_and_display_name_search(s, "c16"),
        conformance::cursors_and_flags(s, "c3"),
        conformance::accounts_and_tokens(s, "c4"),
        conformance::devices_bind_and_remove(s, "c5"),
        conformance::relations_follow_the_rules(s, "c6"),
        conformance::groups_change_with_their_events(s, "c7"),
        conformance::media_records(s, "c8"),
        conformance::retention_prunes_history(s, "c10"),
    );
    conformance::shutdown_refuses_later_writes(s, "c9").await;
}
