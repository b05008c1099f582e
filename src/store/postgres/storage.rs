//! [`PgStorage`]: the pool, the backend's own runtime, and the [`Storage`]
//! handle over the other files' statements.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};

use super::error::PgErrors;
use super::names::{DEFAULT_IDENTITY_TABLE, DEFAULT_TRUST_TABLE, redact_uri, valid_table_name};
use super::{agents, entries, outbox, records, schema, transaction};
use crate::store::contract::{
    AgentStore, InboundGroup, MailboxStore, OutboxStore, Storage, StoreTransaction,
};
use crate::store::{IdentityStore, StoreError, StoreResult, TrustStore};

/// How to reach the database and which tables to use.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq-style connection string: `postgres://user:password@host:port/db` or
    /// `host=… user=… dbname=…`. `sslmode=require` uses TLS with the system's CAs;
    /// the default, `prefer`, uses TLS when the server offers it.
    pub uri: String,
    /// The trust records' table (the reference's `POSTGRES_TABLE`).
    pub trust_table: String,
    /// The identity records' table (the reference's `POSTGRES_IDENTITY_TABLE`).
    pub identity_table: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long connecting (and waiting for a free pooled connection) may take.
    pub connect_timeout: Duration,
    /// How long one statement may take before the call fails as unavailable.
    pub statement_timeout: Duration,
    /// This node's name among the nodes sharing the database: the owner of its
    /// outbox claims, released at its next start ([`OutboxStore::release_claims`]).
    /// Keep it stable across restarts and distinct between nodes.
    pub node: String,
    /// The sessions' `application_name` unless the connection string sets one
    /// (`btps`; `btps migrate` uses `btps-migrate` and refuses to copy while
    /// `btps` sessions are open).
    pub application_name: String,
}

impl PgOptions {
    /// The reference's default table names (`btps_trust`, `btps_identity`), ten
    /// connections, 5 s to connect, 30 s per statement, a node name that is new
    /// for every process.
    pub fn new(uri: impl Into<String>) -> Self {
        PgOptions {
            uri: uri.into(),
            trust_table: DEFAULT_TRUST_TABLE.to_owned(),
            identity_table: DEFAULT_IDENTITY_TABLE.to_owned(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            node: format!("node-{}", uuid::Uuid::new_v4()),
            application_name: "btps".to_owned(),
        }
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("uri", &redact_uri(&self.uri))
            .field("trust_table", &self.trust_table)
            .field("identity_table", &self.identity_table)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("node", &self.node)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// The pool, the runtime it runs on, and what every query needs to know.
pub(crate) struct Db {
    pub(crate) pool: Pool,
    pub(crate) runtime: RuntimeHolder,
    /// The redacted connection string: the `path` of every [`StoreError`].
    pub(crate) name: Arc<str>,
    pub(crate) tables: Arc<schema::Tables>,
    pub(crate) node: Arc<str>,
    pub(crate) statement_timeout: Duration,
}

/// The backend's own runtime, shut down in the background when the last handle
/// goes (dropping a runtime inside another's async context would panic).
pub(crate) struct RuntimeHolder(Option<tokio::runtime::Runtime>);

impl RuntimeHolder {
    pub(crate) fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for RuntimeHolder {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Db {
    pub(crate) fn errors(&self) -> PgErrors {
        PgErrors {
            name: Arc::clone(&self.name),
        }
    }

    /// Runs `work` on the backend's runtime and waits for it from async code.
    pub(crate) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let handle = self.runtime.handle().ok_or_else(stopped)?;
        handle
            .spawn(work)
            .await
            .map_err(|error| StoreError::TaskFailed(error.to_string()))?
    }

    /// Runs `work` on the backend's runtime and blocks the calling thread until it
    /// ends. Allowed on any thread: the work runs elsewhere.
    pub(crate) fn block<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let handle = self.runtime.handle().ok_or_else(stopped)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            // The receiver waits for this; it only goes if the caller panicked.
            let _ = sender.send(work.await);
        });
        receiver
            .recv()
            .map_err(|_| StoreError::TaskFailed("a PostgreSQL task stopped".to_owned()))?
    }

    /// A pooled connection (to be used on the backend's runtime).
    pub(crate) async fn connection(pool: &Pool, errors: &PgErrors) -> StoreResult<Object> {
        pool.get().await.map_err(|error| errors.pool(&error))
    }

    /// The parts a task on the runtime needs, cloned out of `self`.
    pub(crate) fn parts(&self) -> Parts {
        Parts {
            pool: self.pool.clone(),
            errors: self.errors(),
            tables: Arc::clone(&self.tables),
            node: Arc::clone(&self.node),
            timeout: self.statement_timeout,
        }
    }
}

fn stopped() -> StoreError {
    StoreError::TaskFailed("the PostgreSQL runtime has stopped".to_owned())
}

/// What a task on the backend's runtime works with.
#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) pool: Pool,
    pub(crate) errors: PgErrors,
    pub(crate) tables: Arc<schema::Tables>,
    pub(crate) node: Arc<str>,
    pub(crate) timeout: Duration,
}

impl Parts {
    pub(crate) async fn connection(&self) -> StoreResult<Object> {
        Db::connection(&self.pool, &self.errors).await
    }

    /// `work` with a pooled connection, within the statement timeout. A
    /// connection whose work timed out is dropped, not returned to the pool.
    pub(crate) async fn with<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(Arc<Object>, Parts) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let connection = Arc::new(self.connection().await?);
        let outcome =
            tokio::time::timeout(self.timeout, work(Arc::clone(&connection), self.clone())).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                if let Ok(object) = Arc::try_unwrap(connection) {
                    drop(Object::take(object));
                }
                Err(self.errors.timed_out())
            }
        }
    }

    /// `work` inside one transaction, committed (durably) when it returns `Ok`.
    /// Every write of the async stores runs in one.
    pub(crate) async fn in_transaction<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(Arc<Object>, Parts) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.with(|client, parts| async move {
            // Durable on commit whatever the server's default (docs/embedding.md
            // §5.5); a transaction setting, so that it works through a pooler too.
            client
                .batch_execute("BEGIN; SET LOCAL synchronous_commit = on")
                .await
                .map_err(|e| parts.errors.query(&e))?;
            match work(Arc::clone(&client), parts.clone()).await {
                Ok(value) => {
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(|e| parts.errors.query(&e))?;
                    Ok(value)
                }
                Err(error) => {
                    // A failed rollback leaves the connection broken: it is closed.
                    if client.batch_execute("ROLLBACK").await.is_err()
                        && let Ok(object) = Arc::try_unwrap(client)
                    {
                        drop(Object::take(object));
                    }
                    Err(error)
                }
            }
        })
        .await
    }
}

/// The PostgreSQL [`Storage`]: trust and identity records, mailboxes, the outbox.
///
/// Cloning gives another handle on the same pool.
#[derive(Clone)]
pub struct PgStorage {
    pub(crate) db: Arc<Db>,
    trust: records::PgTrust,
    identities: records::PgIdentities,
    mailboxes: entries::PgMailboxes,
    outbox: outbox::PgOutbox,
    agents: agents::PgAgents,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("database", &self.db.name)
            .field("node", &self.db.node)
            .finish_non_exhaustive()
    }
}

impl PgStorage {
    /// Connects, creates or migrates the schema (one transaction, refusing a
    /// database of a newer btps) and returns the handle. Blocking: call it outside
    /// async code or through `spawn_blocking`.
    pub fn connect(options: &PgOptions) -> StoreResult<Self> {
        let name: Arc<str> = Arc::from(redact_uri(&options.uri));
        let errors = PgErrors {
            name: Arc::clone(&name),
        };
        for table in [&options.trust_table, &options.identity_table] {
            if !valid_table_name(table) {
                return Err(errors.config(format!(
                    "{table:?} is not a table name this backend accepts (lower-case letters, digits and _, at most 48)"
                )));
            }
        }
        if options.trust_table == options.identity_table {
            return Err(errors.config("the trust and identity tables must differ".to_owned()));
        }
        let mut config: tokio_postgres::Config =
            options
                .uri
                .parse()
                .map_err(|error: tokio_postgres::Error| {
                    errors.config(format!("the connection string is not valid: {error}"))
                })?;
        config
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name(&options.application_name);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("btps-postgres")
            .enable_all()
            .build()
            .map_err(|error| errors.config(format!("starting the database runtime: {error}")))?;
        let manager = Manager::from_config(
            config,
            tls_connector(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| errors.config(format!("building the connection pool: {error}")))?;
        let tables = Arc::new(schema::Tables::new(
            &options.trust_table,
            &options.identity_table,
        ));
        let db = Arc::new(Db {
            pool,
            runtime: RuntimeHolder(Some(runtime)),
            name,
            tables,
            node: Arc::from(options.node.as_str()),
            statement_timeout: options.statement_timeout,
        });
        let parts = db.parts();
        db.block(async move { schema::migrate(&parts).await })?;
        Ok(PgStorage {
            trust: records::PgTrust {
                db: Arc::clone(&db),
            },
            identities: records::PgIdentities {
                db: Arc::clone(&db),
            },
            mailboxes: entries::PgMailboxes {
                db: Arc::clone(&db),
            },
            outbox: outbox::PgOutbox {
                db: Arc::clone(&db),
            },
            agents: agents::PgAgents {
                db: Arc::clone(&db),
            },
            db,
        })
    }

    /// The connection string with its password hidden.
    pub fn name(&self) -> &str {
        &self.db.name
    }

    /// This node's name (the owner of its outbox claims).
    pub fn node(&self) -> &str {
        &self.db.node
    }

    /// Sessions of btps servers (`application_name` `btps`) on this database other
    /// than this handle's: a running node.
    pub fn server_sessions(&self) -> StoreResult<u64> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    let found = super::records::rows(
                        &client,
                        &parts.errors,
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND application_name = 'btps'
                         AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await?;
                    let count: i64 = match found.first() {
                        Some(row) => row.try_get(0).map_err(|e| parts.errors.query(&e))?,
                        None => 0,
                    };
                    Ok(u64::try_from(count).unwrap_or(0))
                })
                .await
        })
    }

    /// How many rows each table holds (for `btps migrate` and operators), by table.
    pub fn table_counts(&self) -> StoreResult<Vec<(String, u64)>> {
        let parts = self.db.parts();
        self.db
            .block(async move { schema::table_counts(&parts).await })
    }
}

impl Storage for PgStorage {
    fn trust(&self) -> &dyn TrustStore {
        &self.trust
    }

    fn identities(&self) -> &dyn IdentityStore {
        &self.identities
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        &self.mailboxes
    }

    fn outbox(&self) -> &dyn OutboxStore {
        &self.outbox
    }

    fn agents(&self) -> Option<&dyn AgentStore> {
        Some(&self.agents)
    }

    fn transact(
        &self,
        _owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut transaction = transaction::PgTransaction::begin(&self.db)?;
        work(&mut transaction)?;
        transaction.commit()
    }

    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()> {
        let mut transaction = transaction::PgTransaction::begin(&self.db)?;
        let mut wrote = false;
        for index in 0..group.len() {
            // On error the transaction is dropped unfinished: rolled back.
            wrote |= group.apply(index, &mut transaction)?;
        }
        if wrote {
            transaction.commit()
        } else {
            transaction.roll_back()
        }
    }

    fn check_ready(&self) -> StoreResult<()> {
        let parts = self.db.parts();
        self.db.block(async move {
            parts
                .with(|client, parts| async move {
                    // A read, and whether this server takes writes (a standby
                    // after a fail-over does not).
                    let rows = super::records::rows(
                        &client,
                        &parts.errors,
                        "SELECT current_setting('transaction_read_only')",
                        &[],
                    )
                    .await?;
                    let read_only = rows
                        .first()
                        .and_then(|row| row.try_get::<_, String>(0).ok())
                        .is_some_and(|value| value == "on");
                    if read_only {
                        return Err(parts.errors.unavailable("database is read-only"));
                    }
                    Ok(())
                })
                .await
        })
    }
}

/// TLS for `sslmode=prefer|require`: rustls with ring and the system's CAs.
fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .with_root_certificates(roots.clone())
                .with_no_client_auth()
        })
        // ring supports the default versions; this branch is not reached.
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        });
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}
