//! The PostgreSQL store, Attaché's source of truth.
//!
//! [`Store`] wraps a connection pool. Every query lives in one of the topic
//! modules below, so callers never write SQL. Each binary runs the migrations
//! at start under a session advisory lock, so replicas starting together do
//! not race each other.
//!
//! - [`teams`]: teams and their hashed API keys.
//! - [`tasks`]: accepting a task with its attachments and fetch jobs in one
//!   transaction, and reading it back.
//! - [`fetches`]: what a fetch-worker loads and records per attempt, including
//!   completing the task and queueing its callback.
//! - [`callbacks`]: what a callback-worker loads and records per attempt.
//! - [`outbox`]: jobs waiting to be published, and the notification that
//!   wakes the relay.
//! - [`integrations`]: teams' cloud storage settings, such as AWS delegation.
//! - [`replay`]: queueing failed attachments and dead callbacks again.
//! - [`batch`]: running the calls of many concurrent jobs in batches.

pub mod batch;
mod cached;
pub mod callbacks;
pub mod fetches;
pub mod integrations;
pub mod outbox;
pub mod replay;
pub mod tasks;
pub mod teams;

use std::time::Duration;

use attache_config::DatabaseArgs;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// Key of the session advisory lock held while migrating.
const MIGRATION_LOCK_KEY: i64 = 0x6174_7461_6368_6501;

/// A failure to build the pool, migrate, reach PostgreSQL, run a statement
/// or read a row. Callers treat every error from a query as transient:
/// workers requeue the job without marking anything failed, and the API
/// responds with 503.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database statement failed: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Startup(String),
    /// Rows that contradict each other, such as a conflict on a key that
    /// no row holds.
    #[error("{0}")]
    Inconsistent(String),
    #[error("unexpected value in column `{column}`: {value}")]
    Corrupt { column: &'static str, value: String },
    /// The batch this call was part of failed; every call in it gets the
    /// same error.
    #[error("{0}")]
    Batch(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// Returns whether PostgreSQL rejected a statement because of its data or a
    /// conflict with another transaction (a constraint, a deadlock), as
    /// opposed to the database, the connection or the pool failing.
    pub fn is_statement_error(&self) -> bool {
        match self {
            // Class 40 is a deadlock or serialization failure, 22 invalid
            // data and 23 a violated constraint. Other classes, such as 57
            // (the server shutting down), mean the database is unavailable.
            StoreError::Postgres(error) => error.as_db_error().is_some_and(|db| {
                let code = db.code().code();
                code.starts_with("40") || code.starts_with("22") || code.starts_with("23")
            }),
            StoreError::Batch(error) => error.is_statement_error(),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A pool of PostgreSQL connections and the queries that use them.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    database_url: String,
}

impl Store {
    /// Builds the pool. No connection is opened until the first query.
    pub fn connect(args: &DatabaseArgs) -> Result<Self> {
        let mut config: tokio_postgres::Config = args
            .database_url
            .parse()
            .map_err(|error: tokio_postgres::Error| {
                StoreError::Config(format!(
                    "ATTACHE_DATABASE_URL (--database-url) is not a PostgreSQL URL ({error}): write it as postgres://USER@HOST:PORT/DATABASE"
                ))
            })?;
        // A connection to a host that vanished (a crash or a partition
        // during failover) fails within a minute instead of the system's
        // two hours, so a query on it cannot hold up the jobs behind it.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(60));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Checkout only checks that the connection is not closed,
                // without a test query, and replaces a closed one.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(args.database_pool_size)
            .runtime(Runtime::Tokio1)
            // deadpool waits forever by default, but a job that finds the
            // pool exhausted must fail and be retried rather than hang.
            .wait_timeout(Some(args.database_wait_timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|error| StoreError::Config(error.to_string()))?;
        Ok(Self {
            pool,
            database_url: args.database_url.clone(),
        })
    }

    /// Applies pending migrations under a session advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        // A rolling upgrade or a rollback runs this release against a
        // database that a newer one migrated, so each migration leaves the
        // previous release working.
        let outcome = embedded::migrations::runner()
            .set_abort_missing(false)
            .run_async(&mut **client)
            .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await?;
        let report = outcome?;
        for migration in report.applied_migrations() {
            tracing::info!(
                version = migration.version(),
                name = migration.name(),
                "applied migration"
            );
        }
        Ok(())
    }

    /// Builds the pool and applies migrations, waiting up to two minutes for
    /// PostgreSQL to respond: what every binary does at start.
    pub async fn open(args: &DatabaseArgs) -> Result<Self> {
        let store = Self::connect(args)?;
        if let Err(error) = store.migrate_with_retry(Duration::from_secs(120)).await {
            return Err(StoreError::Startup(format!(
                "cannot prepare the database {} (ATTACHE_DATABASE_URL): {}: check that PostgreSQL runs there and the database exists (createdb)",
                describe(&args.database_url),
                error_chain(&error)
            )));
        }
        Ok(store)
    }

    /// Applies migrations, retrying with back-off while PostgreSQL cannot
    /// be reached, for up to `max_wait`; a binary started during a database
    /// restart or failover waits instead of exiting.
    pub async fn migrate_with_retry(&self, max_wait: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            match self.migrate().await {
                Ok(()) => return Ok(()),
                Err(error) if unreachable(&error) && started.elapsed() + delay < max_wait => {
                    tracing::warn!(%error, retry_in = ?delay, "database not reachable at start, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Runs `SELECT 1` to check that the database responds.
    pub async fn ping(&self) -> Result<()> {
        let client = self.pool.get().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Borrows a pooled connection, for callers that hold a transaction
    /// across other I/O, such as the outbox relay.
    pub async fn connection(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Closes the pool, so later queries fail.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Returns the URL this store connects to, for dedicated connections
    /// that a pool cannot provide (LISTEN).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }
}

fn parse_column<T: std::str::FromStr>(column: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| StoreError::Corrupt {
        column,
        value: value.to_owned(),
    })
}

/// Reads a task's metadata, selected as `metadata::text`, as compact JSON
/// with sorted keys. PostgreSQL prints numbers in full decimal, so `5e-324`
/// takes 326 characters, and serde_json writes them short again. A number
/// that serde_json cannot hold, such as one near the largest double, is
/// sent as PostgreSQL printed it instead of failing the read.
fn metadata_column(row: &tokio_postgres::Row) -> Result<Box<serde_json::value::RawValue>> {
    let text: String = row.get("metadata");
    let raw = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => serde_json::value::to_raw_value(&value),
        Err(_) => serde_json::value::RawValue::from_string(text),
    };
    raw.map_err(|error| StoreError::Corrupt {
        column: "tasks.metadata",
        value: error.to_string(),
    })
}

/// Names a database URL's host, port and database, leaving out credentials.
fn describe(database_url: &str) -> String {
    let Ok(config) = database_url.parse::<tokio_postgres::Config>() else {
        return "(unparsable URL)".to_owned();
    };
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "`{}` at {host}:{port}",
        config.get_dbname().unwrap_or_default()
    )
}

/// Joins an error and its causes, so the innermost reason (such as
/// `database "x" does not exist`) is shown.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Tells whether an error means PostgreSQL could not be reached, which
/// may pass, rather than a response such as a missing database or a wrong
/// password, which will not.
fn unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Pool(deadpool_postgres::PoolError::Backend(error))
        | StoreError::Postgres(error) => error.code().is_none(),
        StoreError::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
        _ => false,
    }
}
