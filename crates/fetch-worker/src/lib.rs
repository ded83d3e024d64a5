//! Attaché's fetch-worker.
//!
//! Consumes fetch jobs, streams each attachment from its source into the
//! attachment store while hashing it, and records the outcome; the outcome
//! that completes a task also queues the task's callback (see
//! `attache_store::fetches`). A job is acknowledged only after its outcome is
//! committed.
//!
//! - [`handler`]: the stages of one job: decode, load, fetch, classify,
//!   record.
//! - [`fetcher`]: one fetcher per URI scheme, chosen by provider.
//! - [`access`]: which identity a team's fetch of a provider uses.
//! - [`batch`]: the jobs' database reads and writes, in batches.
//! - [`storage`]: the attachment store.

pub mod access;
pub mod batch;
pub mod fetcher;
pub mod handler;
mod metrics;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attache_config::{BrokerArgs, DatabaseArgs, parse_duration};
use attache_domain::RetryPolicy;
use attache_egress::{Egress, EgressArgs, EgressSettings};
use attache_queue::{ConsumerSettings, QueueKind, Topology};
use attache_store::Store;
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::fetcher::Fetchers;
use crate::handler::FetchHandler;
use crate::storage::LocalDirStore;

/// How long a delivery is held and retried through a database outage
/// before it returns to the queue.
const HOLD_ON_FAILURE: Duration = Duration::from_secs(60);

/// Settings of `attache-fetch-worker`.
#[derive(Args, Clone, Debug)]
pub struct FetchWorkerConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub egress: EgressArgs,
    #[command(flatten)]
    pub aws: attache_aws::AwsArgs,
    #[command(flatten)]
    pub gcp: attache_gcp::GcpArgs,
    #[command(flatten)]
    pub azure: attache_azure::AzureArgs,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "ATTACHE_ADMIN_ADDR", default_value = "127.0.0.1:9081")]
    pub admin_addr: SocketAddr,

    /// Fetches in flight at once. Also the broker prefetch, in messages, and
    /// a message carries one fetch or a group of up to 16.
    #[arg(long, env = "ATTACHE_FETCH_CONCURRENCY", default_value_t = 32)]
    pub fetch_concurrency: u16,

    /// Directory of the local attachment store.
    #[arg(long, env = "ATTACHE_STORE_DIR", default_value = "data/attachments")]
    pub store_dir: PathBuf,

    /// Largest attachment accepted; a larger one fails with `too_large`.
    #[arg(long, env = "ATTACHE_MAX_ATTACHMENT_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_attachment_bytes: u64,

    /// Time allowed to connect to a source.
    #[arg(long, env = "ATTACHE_FETCH_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub fetch_connect_timeout: Duration,

    /// Maximum silence while reading a source's response.
    #[arg(long, env = "ATTACHE_FETCH_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub fetch_read_timeout: Duration,

    /// Time allowed for one whole fetch, body included.
    #[arg(long, env = "ATTACHE_FETCH_TOTAL_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub fetch_total_timeout: Duration,

    /// Redirects followed per fetch.
    #[arg(long, env = "ATTACHE_FETCH_MAX_REDIRECTS", default_value_t = 5)]
    pub fetch_max_redirects: usize,

    /// Attempts per attachment, the first included, for retryable errors.
    #[arg(long, env = "ATTACHE_FETCH_MAX_ATTEMPTS", default_value_t = 4)]
    pub fetch_max_attempts: u32,

    /// Delay before the first retry; later ones grow fourfold up to a minute.
    #[arg(long, env = "ATTACHE_FETCH_RETRY_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub fetch_retry_delay: Duration,

    /// Time in-flight jobs get to finish after a shutdown signal.
    #[arg(long, env = "ATTACHE_SHUTDOWN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_deadline: Duration,
}

impl FetchWorkerConfig {
    /// Returns the longest time one fetch job runs once it has a fetch
    /// slot: the request, then up to a minute holding the delivery through
    /// a database outage, plus the database's own wait.
    fn job_deadline(&self) -> Duration {
        self.fetch_total_timeout + HOLD_ON_FAILURE + self.database.database_wait_timeout
    }

    /// Returns how long a job may wait for a fetch slot, so that a message
    /// whose jobs wait in turn still finishes within the consumer timeout.
    /// At least a second, even when the timeout leaves no room, which the
    /// start-up check reports.
    fn slot_wait_limit(&self) -> Duration {
        self.broker
            .broker_consumer_timeout
            .saturating_sub(self.job_deadline())
            .max(Duration::from_secs(1))
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            first_delay: self.fetch_retry_delay,
            max_delay: Duration::from_secs(60).max(self.fetch_retry_delay),
            factor: 4.0,
            max_attempts: self.fetch_max_attempts,
            max_age: Duration::from_secs(3600),
            jitter: true,
        }
    }
}

/// A fetch-worker with its admin listener bound and database migrated.
pub struct FetchWorker {
    config: FetchWorkerConfig,
    store: Store,
    attachments: LocalDirStore,
    admin: TcpListener,
}

impl FetchWorker {
    /// Connects to PostgreSQL, migrates it and binds the admin listener.
    pub async fn bind(config: FetchWorkerConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.fetch_concurrency > 0,
            "--fetch-concurrency must be at least 1"
        );
        anyhow::ensure!(
            config.fetch_max_attempts > 0,
            "--fetch-max-attempts must be at least 1"
        );
        attache_queue::check_consumer_timeout(
            config.job_deadline(),
            config.broker.broker_consumer_timeout,
        );
        let attachments = LocalDirStore::open(config.store_dir.clone()).map_err(|error| {
            anyhow::anyhow!(
                "cannot use {} as the attachment store (ATTACHE_STORE_DIR, --store-dir): {error}: give a directory that this user can create files in",
                config.store_dir.display()
            )
        })?;
        let store = Store::open(&config.database).await?;
        let admin =
            attache_telemetry::bind_listener(config.admin_addr, "ATTACHE_ADMIN_ADDR, --admin-addr")
                .await?;
        Ok(Self {
            config,
            store,
            attachments,
            admin,
        })
    }

    /// Returns the address the admin server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Consumes fetch jobs until `shutdown` fires and in-flight jobs finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            store,
            attachments,
            admin,
        } = self;
        let pinger = store.clone();
        let (readiness, broker_ready) =
            attache_telemetry::database_and_broker_readiness(&shutdown, move || {
                let store = pinger.clone();
                async move { store.ping().await }
            });

        let egress = Egress::new(
            &config.egress,
            &EgressSettings {
                connect_timeout: config.fetch_connect_timeout,
                read_timeout: config.fetch_read_timeout,
                total_timeout: config.fetch_total_timeout,
                max_redirects: config.fetch_max_redirects,
                user_agent: concat!("attache-fetch-worker/", env!("CARGO_PKG_VERSION")).to_owned(),
            },
        )?;
        let aws = if config.aws.enabled() {
            Some(Arc::new(attache_aws::Aws::new(&config.aws).await))
        } else {
            None
        };
        let gcp = if config.gcp.enabled() {
            Some(Arc::new(attache_gcp::Gcp::new(
                &config.gcp,
                egress.clone(),
            )?))
        } else {
            None
        };
        let azure = config
            .azure
            .enabled()
            .then(|| Arc::new(attache_azure::Azure::new(&config.azure, egress.clone())));
        let attachment_store = Arc::new(attachments);
        // Uploads older than the longest fetch are abandoned by a killed
        // worker; a running upload of another replica is younger.
        let sweeper = attachment_store.clone();
        let max_age = config.fetch_total_timeout + Duration::from_secs(60);
        tokio::task::spawn_blocking(move || {
            let deleted = sweeper.sweep_abandoned(max_age);
            if deleted > 0 {
                tracing::info!(deleted, "deleted abandoned temporary uploads");
            }
        });
        let handler = FetchHandler {
            loader: batch::loader(store.clone()),
            recorder: batch::recorder(store.clone()),
            store,
            fetchers: Fetchers::new(egress, aws, gcp, azure),
            attachments: attachment_store.clone(),
            retry: config.retry_policy(),
            max_bytes: config.max_attachment_bytes,
            // RabbitMQ allows `limit` + 1 deliveries; the worker gives up on
            // the last one itself, so the row gets a final state.
            give_up_after: config.broker.queue_delivery_limit,
            fetch_slots: Semaphore::new(usize::from(config.fetch_concurrency)),
            slot_wait_limit: config.slot_wait_limit(),
        };
        let settings = ConsumerSettings {
            amqp_url: config.broker.amqp_url.clone(),
            connection_name: "attache-fetch-worker".to_owned(),
            topology: Topology::new(
                &config.broker.queue_prefix,
                config.broker.queue_delivery_limit,
            ),
            kind: QueueKind::Fetch,
            prefetch: config.fetch_concurrency,
            shutdown_deadline: config.shutdown_deadline,
            requeue_delay: Duration::from_secs(2),
            hold_on_failure: HOLD_ON_FAILURE,
        };

        let admin = tokio::spawn(attache_telemetry::serve_admin(
            admin,
            readiness,
            shutdown.clone(),
        ));
        attache_queue::run_consumer(settings, Arc::new(handler), broker_ready, shutdown).await;
        admin.await?;
        tracing::info!("fetch-worker stopped");
        Ok(())
    }
}
