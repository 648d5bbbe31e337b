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
