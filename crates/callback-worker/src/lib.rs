//! Attaché's callback-worker.
//!
//! Consumes callback jobs, signs each task's result following Standard
//! Webhooks, POSTs it to the customer without following redirects, and
//! records every attempt. A 2xx response delivers the callback. 410 Gone, a
//! destination the guard denies, or an IP literal of an address family that
//! no egress member has stops it at once. Anything else is retried on the
//! configured schedule, and a callback that runs out of attempts is marked
//! dead for an operator to replay.
//!
//! - [`handler`]: the stages of one job.
//! - [`batch`]: the jobs' store calls, in batches.
//! - [`reach`]: the address families the egress members connect over.
//! - [`signing`]: the Standard Webhooks signature.

pub mod batch;
pub mod handler;
mod limiter;
mod metrics;
pub mod reach;
pub mod signing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::{BrokerArgs, DatabaseArgs, parse_duration};
use attache_domain::RetryPolicy;
use attache_egress::{Egress, EgressArgs, EgressSettings};
use attache_queue::{ConsumerSettings, QueueKind, Topology};
use attache_store::Store;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::CallbackHandler;
use crate::limiter::HostLimiter;
use crate::reach::Reach;

/// The maximum delay between two delivery attempts, before jitter.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10 * 3600);

/// How long a delivery is held and retried through a database outage
/// before it returns to the queue.
const HOLD_ON_FAILURE: Duration = Duration::from_secs(60);

/// Settings of `attache-callback-worker`.
#[derive(Args, Clone, Debug)]
pub struct CallbackWorkerConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub egress: EgressArgs,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "ATTACHE_ADMIN_ADDR", default_value = "127.0.0.1:9082")]
    pub admin_addr: SocketAddr,

    /// Deliveries in flight at once; also the broker prefetch.
    #[arg(long, env = "ATTACHE_CALLBACK_CONCURRENCY", default_value_t = 64)]
    pub callback_concurrency: u16,

    /// Time allowed to connect to a customer's endpoint.
    #[arg(long, env = "ATTACHE_CALLBACK_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub callback_connect_timeout: Duration,

    /// Time allowed for one whole delivery attempt.
    #[arg(long, env = "ATTACHE_CALLBACK_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub callback_timeout: Duration,

    /// Attempts per callback, the first included.
    #[arg(long, env = "ATTACHE_CALLBACK_MAX_ATTEMPTS", default_value_t = 8)]
    pub callback_max_attempts: u32,

    /// Delay before the first retry; later ones grow sixfold up to ten
    /// hours, so eight attempts span about a day before jitter.
    #[arg(long, env = "ATTACHE_CALLBACK_RETRY_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub callback_retry_delay: Duration,

    /// Maximum deliveries in flight to one host, so one slow endpoint
    /// cannot take every delivery slot. A job over the limit is postponed
    /// by a second without spending an attempt.
    #[arg(
        long,
        env = "ATTACHE_CALLBACK_CONCURRENCY_PER_HOST",
        default_value_t = 8
    )]
    pub callback_concurrency_per_host: usize,

    /// Time in-flight jobs get to finish after a shutdown signal.
    #[arg(long, env = "ATTACHE_SHUTDOWN_DEADLINE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_deadline: Duration,
}

impl CallbackWorkerConfig {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            first_delay: self.callback_retry_delay,
            max_delay: MAX_RETRY_DELAY.max(self.callback_retry_delay),
            factor: 6.0,
            max_attempts: self.callback_max_attempts,
            // Jitter can double each delay, so eight attempts may take up to
            // two days; three days leaves room without retrying forever.
            max_age: Duration::from_secs(3 * 86_400),
            jitter: true,
        }
    }
}

/// A callback-worker with its admin listener bound and database migrated.
pub struct CallbackWorker {
    config: CallbackWorkerConfig,
    store: Store,
    admin: TcpListener,
}

impl CallbackWorker {
    /// Connects to PostgreSQL, migrates it and binds the admin listener.
    pub async fn bind(config: CallbackWorkerConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.callback_concurrency > 0,
            "--callback-concurrency must be at least 1"
        );
        anyhow::ensure!(
            config.callback_max_attempts > 0,
            "--callback-max-attempts must be at least 1"
        );
        // One request, then up to a minute holding the delivery through a
        // database outage, plus the database's own wait.
        attache_queue::check_consumer_timeout(
            config.callback_timeout + HOLD_ON_FAILURE + config.database.database_wait_timeout,
            config.broker.broker_consumer_timeout,
        );
        let store = Store::open(&config.database).await?;
        let admin =
            attache_telemetry::bind_listener(config.admin_addr, "ATTACHE_ADMIN_ADDR, --admin-addr")
                .await?;
        Ok(Self {
            config,
            store,
            admin,
        })
    }

    /// Returns the address the admin server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Consumes callback jobs until `shutdown` fires and in-flight jobs
    /// finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            store,
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
                connect_timeout: config.callback_connect_timeout,
                read_timeout: config.callback_timeout,
                total_timeout: config.callback_timeout,
                // A redirect could send the signed result somewhere the
                // customer did not register.
                max_redirects: 0,
                user_agent: concat!("attache-callback-worker/", env!("CARGO_PKG_VERSION"))
                    .to_owned(),
            },
        )?;
        // A claimed attempt is reserved for longer than its request may take.
        let lease = config.callback_timeout + Duration::from_secs(10);
        let handler = CallbackHandler {
            calls: batch::Calls::spawn(&store, lease),
            store,
            egress,
            reach: Reach::of(&config.egress.egress_members),
            retry: config.retry_policy(),
            limiter: HostLimiter::new(config.callback_concurrency_per_host),
            // RabbitMQ allows `limit` + 1 deliveries; the worker gives up on
            // the last one itself, so the row gets a final state.
            give_up_after: config.broker.queue_delivery_limit,
        };
        let settings = ConsumerSettings {
            amqp_url: config.broker.amqp_url.clone(),
            connection_name: "attache-callback-worker".to_owned(),
            topology: Topology::new(
                &config.broker.queue_prefix,
                config.broker.queue_delivery_limit,
            ),
            kind: QueueKind::Callback,
            prefetch: config.callback_concurrency,
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
        tracing::info!("callback-worker stopped");
        Ok(())
    }
}
