//! Attaché's producer: the HTTP API the task pipeline submits tasks to, and
//! the outbox relay that publishes the jobs those tasks queue.
//!
//! The API writes a task, its attachments and their outbox rows in one
//! PostgreSQL transaction before it responds with 202. The relay runs in the
//! same process, publishes outbox rows to RabbitMQ and deletes them once the
//! broker confirms them. See [`api`] and [`relay`].

pub mod api;
pub mod cli;
pub mod keys;
mod metrics;
pub mod relay;

use std::net::SocketAddr;

use attache_config::{BrokerArgs, DatabaseArgs};
use attache_queue::Topology;
use attache_store::Store;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Settings of `attache-producer serve`.
#[derive(Args, Clone, Debug)]
pub struct ProducerConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub limits: api::Limits,
    #[command(flatten)]
    pub relay: relay::RelaySettings,
    #[command(flatten)]
    pub aws: attache_aws::AwsArgs,
    #[command(flatten)]
    pub gcp: attache_gcp::GcpArgs,
    #[command(flatten)]
    pub azure: attache_azure::AzureArgs,

    /// The egress pool, as for the workers. The API rejects attachment and
    /// callback URLs whose host is a non-public IP literal outside
    /// `egress_allow_cidrs`. The pool itself is built only when GCP or
    /// Azure is configured, for the token and storage requests of their
    /// integration routes.
    #[command(flatten)]
    pub egress: attache_egress::EgressArgs,

    /// Address the task API listens on.
    #[arg(long, env = "ATTACHE_API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,

    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "ATTACHE_ADMIN_ADDR", default_value = "127.0.0.1:9080")]
    pub admin_addr: SocketAddr,
}

/// A producer with its listeners bound and its database migrated.
pub struct Producer {
    config: ProducerConfig,
    store: Store,
    api: TcpListener,
    admin: TcpListener,
}

impl Producer {
    /// Binds both listeners, connects to PostgreSQL and migrates it.
    pub async fn bind(config: ProducerConfig) -> anyhow::Result<Self> {
        let store = Store::open(&config.database).await?;
        let api = attache_telemetry::bind_listener(config.api_addr, "ATTACHE_API_ADDR, --api-addr")
            .await?;
        let admin =
            attache_telemetry::bind_listener(config.admin_addr, "ATTACHE_ADMIN_ADDR, --admin-addr")
                .await?;
        Ok(Self {
            config,
            store,
            api,
            admin,
        })
    }

    /// Returns the address the task API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Returns the address the admin server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` fires. Then the API stops accepting
    /// connections, in-flight requests finish, and the relay stops after its
    /// current batch.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            store,
            api,
            admin,
        } = self;
        let pinger = store.clone();
        let (readiness, broker_ready) =
            attache_telemetry::database_and_broker_readiness(&shutdown, move || {
                let store = pinger.clone();
                async move { store.ping().await }
            });

        let topology = Topology::new(
            &config.broker.queue_prefix,
            config.broker.queue_delivery_limit,
        );
        // The API wakes the relay itself after accepting a task, so task
        // inserts need no database notification; see the outbox migration.
        let wake_relay = std::sync::Arc::new(tokio::sync::Notify::new());
        let relay = tokio::spawn(relay::run(
            store.clone(),
            config.broker.amqp_url.clone(),
            topology,
            config.relay.clone(),
            broker_ready,
            wake_relay.clone(),
            shutdown.clone(),
        ));
        let admin = tokio::spawn(attache_telemetry::serve_admin(
            admin,
            readiness,
            shutdown.clone(),
        ));

        tracing::info!(addr = %api.local_addr()?, "task API listening");
        let mut state = api::AppState::new(
            store,
            config.limits.clone(),
            attache_egress::guard::DestinationPolicy::new(config.egress.egress_allow_cidrs.clone()),
        )
        .with_relay_wake(wake_relay);
        if config.aws.enabled() {
            state = state.with_aws(std::sync::Arc::new(
                attache_aws::Aws::new(&config.aws).await,
            ));
        }
        let egress = if config.gcp.enabled() || config.azure.enabled() {
            Some(egress_pool(&config.egress)?)
        } else {
            None
        };
        if let (true, Some(egress)) = (config.gcp.enabled(), &egress) {
            state = state.with_gcp(std::sync::Arc::new(attache_gcp::Gcp::new(
                &config.gcp,
                egress.clone(),
            )?));
        }
        if let (true, Some(egress)) = (config.azure.enabled(), egress) {
            state = state.with_azure(std::sync::Arc::new(attache_azure::Azure::new(
                &config.azure,
                egress,
            )));
        }
        let router = api::router(state);
        axum::serve(api, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await?;

        relay.await?;
        admin.await?;
        tracing::info!("producer stopped");
        Ok(())
    }
}

/// Builds the producer's egress pool, for the GCP and Azure integration
/// routes.
fn egress_pool(args: &attache_egress::EgressArgs) -> anyhow::Result<attache_egress::Egress> {
    let settings = attache_egress::EgressSettings {
        connect_timeout: std::time::Duration::from_secs(10),
        read_timeout: std::time::Duration::from_secs(30),
        // An API request waits for these calls, so they are kept short.
        total_timeout: std::time::Duration::from_secs(30),
        max_redirects: 5,
        user_agent: concat!("attache-producer/", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    Ok(attache_egress::Egress::new(args, &settings)?)
}
