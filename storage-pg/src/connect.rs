//! Opening connections: every session acknowledges a commit only once it is durable.

use courier_storage::Result;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::pg;

/// Opens connections to one database.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
}

impl Connector {
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// A new session; its connection runs on its own task until the client is
    /// dropped or the server goes away.
    pub async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        // The server's default, made explicit: a COMMIT returns once the WAL is
        // flushed, which is what an acknowledgement promises.
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(pg)?;
        Ok(client)
    }
}

/// Statements prepared on one session, by SQL text: a query is then one round trip
/// (bind and execute) instead of two (prepare, then bind and execute). Cleared when
/// the session is replaced: statements belong to the session that prepared them.
#[derive(Default)]
pub(crate) struct Prepared(
    std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
);

/// Most statements one session keeps prepared (the backend's SQL is a fixed set;
/// this only bounds a mistake).
const PREPARED: usize = 512;

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

impl Prepared {
    /// `sql` prepared on `client` (the session, or a transaction of it).
    async fn get(
        &self,
        client: &impl tokio_postgres::GenericClient,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .cloned();
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = client.prepare(sql).await?;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PREPARED {
            map.clear();
        }
        map.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The queries of a session or a transaction, through its prepared statements.
macro_rules! prepared_queries {
    ($client:ident) => {
        pub async fn query(
            &self,
            sql: &str,
            params: Params<'_>,
        ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
            let s = self.prepared.get(&self.$client, sql).await?;
            self.$client.query(&s, params).await
        }

        pub async fn query_opt(
            &self,
            sql: &str,
            params: Params<'_>,
        ) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
            let s = self.prepared.get(&self.$client, sql).await?;
            self.$client.query_opt(&s, params).await
        }

        pub async fn query_one(
            &self,
            sql: &str,
            params: Params<'_>,
        ) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
            let s = self.prepared.get(&self.$client, sql).await?;
            self.$client.query_one(&s, params).await
        }

        pub async fn execute(
            &self,
            sql: &str,
            params: Params<'_>,
        ) -> Result<u64, tokio_postgres::Error> {
            let s = self.prepared.get(&self.$client, sql).await?;
            self.$client.execute(&s, params).await
        }
    };
}

/// A shared session (reads) whose statements are prepared once.
pub(crate) struct Session {
    client: Client,
    prepared: Prepared,
}

impl Session {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Prepared::default(),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    prepared_queries!(client);
}

/// A transaction whose statements are prepared once per session.
pub(crate) struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    prepared: &'a Prepared,
}

impl<'a> Tx<'a> {
    pub async fn begin(client: &'a mut Client, prepared: &'a Prepared) -> Result<Self> {
        Ok(Self {
            tx: client.transaction().await.map_err(pg)?,
            prepared,
        })
    }

    prepared_queries!(tx);

    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        self.tx.commit().await
    }
}
