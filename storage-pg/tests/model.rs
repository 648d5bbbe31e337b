//! The model test (`storage/tests/model_core/`) against PostgreSQL: the same random
//! operations, compared with the same in-memory model, where a crash is the server
//! stopped with `pg_ctl -m immediate` (no checkpoint; the restart recovers from the
//! WAL) and the store opened again. Every operation is acknowledged before the next,
//! so after each crash the database must hold exactly what the model holds.

mod common;
#[path = "../../storage/tests/model_core/mod.rs"]
mod model_core;

use common::PgServer;
use courier_storage::{PasswordParams, Storage};
use courier_storage_pg::{PgConfig, PgStore};
use model_core::{action, Action, Backend, Harness};
use proptest::test_runner::{Config, TestRunner};

/// One database of the test's server, and the store open on it.
struct Pg<'a> {
    server: &'a PgServer,
    url: String,
    store: Option<PgStore>,
}

async fn open(url: &str) -> PgStore {
    let mut config = PgConfig::new(url);
    config.password = PasswordParams::insecure_fast();
    PgStore::open(config, None).await.unwrap()
}

impl Backend for Pg<'_> {
    fn storage(&self) -> &dyn Storage {
        self.store.as_ref().unwrap()
    }

    fn flush(&mut self, _: &tokio::runtime::Runtime) {}

    fn crash(&mut self, rt: &tokio::runtime::Runtime, _tear: Option<usize>) {
        drop(self.store.take());
        self.server.crash();
        self.server.start_again();
        self.store = Some(rt.block_on(open(&self.url)));
    }
}

/// A fresh database on `server` for one case.
fn database(rt: &tokio::runtime::Runtime, server: &PgServer, n: usize) -> String {
    let name = format!("model{n}");
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    });
    server
        .url
        .replace("dbname=postgres", &format!("dbname={name}"))
}

fn run_case(server: &PgServer, n: usize, actions: &[Action]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = database(&rt, server, n);
    let store = rt.block_on(open(&url));
    let backend = Pg {
        server,
        url,
        store: Some(store),
    };
    model_core::run_all(Harness::new(backend, rt), actions);
}

#[test]
fn postgres_behaves_like_the_model_across_crashes() {
    let server = PgServer::start();
    // Fewer cases than the embedded store runs: each crash restarts the server.
    let mut runner = TestRunner::new(Config {
        cases: 12,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&proptest::collection::vec(action(), 1..40), |actions| {
        let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_case(&server, n, &actions);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
