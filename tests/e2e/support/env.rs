//! One deployment per test: its own database, queue prefix, attachment
//! directory and team, with the three binaries' run functions on tasks.

use std::net::SocketAddr;
use std::time::Duration;

use attache_callback_worker::{CallbackWorker, CallbackWorkerConfig};
use attache_config::{BrokerArgs, DatabaseArgs};
use attache_egress::EgressArgs;
use attache_egress::member::MemberSpec;
use attache_fetch_worker::{FetchWorker, FetchWorkerConfig};
use attache_producer::api::Limits;
use attache_producer::keys::TeamCredentials;
use attache_producer::relay::RelaySettings;
use attache_producer::{Producer, ProducerConfig};
use attache_queue::{QueueKind, Topology};
use attache_store::Store;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::eventually;

/// Settings a test may change.
#[derive(Clone, Debug)]
pub struct Options {
    pub max_attachment_bytes: u64,
    pub fetch_max_attempts: u32,
    pub callback_max_attempts: u32,
    pub limits: Limits,
    /// Egress pool members of both workers; none means direct connections.
    pub egress_members: Vec<MemberSpec>,
    /// Ranges the producer accepts as destination literals; tests of the
    /// workers' own guard widen it so a denied URL gets past the API.
    pub producer_allow_cidrs: Vec<ipnet::IpNet>,
    /// Fetches in flight per fetch-worker.
    pub fetch_concurrency: u16,
    /// The broker's consumer timeout as the workers know it, which sets how
    /// long a fetch job waits for a slot before it is postponed.
    pub broker_consumer_timeout: Duration,
    /// AWS settings of the producer and fetch-worker; disabled by default.
    pub aws: attache_aws::AwsArgs,
    /// Google Cloud settings of the producer and fetch-worker; disabled by
    /// default.
    pub gcp: attache_gcp::GcpArgs,
    /// Azure settings of the producer and fetch-worker; disabled by
    /// default.
    pub azure: attache_azure::AzureArgs,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_attachment_bytes: 64 * 1024,
            fetch_max_attempts: 3,
            callback_max_attempts: 3,
            egress_members: Vec::new(),
            producer_allow_cidrs: vec!["127.0.0.0/8".parse().expect("a valid range")],
            fetch_concurrency: 8,
            broker_consumer_timeout: Duration::from_secs(1800),
            aws: attache_aws::AwsArgs::default(),
            gcp: attache_gcp::GcpArgs::default(),
            azure: attache_azure::AzureArgs::default(),
            limits: Limits {
                max_attachments_per_task: 10,
                max_metadata_bytes: 1024,
                max_request_bytes: 64 * 1024,
            },
        }
    }
}

/// A running deployment.
pub struct Deployment {
    pub api: SocketAddr,
    /// Admin servers of the producer, fetch-worker and callback-worker.
    pub admin: [SocketAddr; 3],
    pub http: reqwest::Client,
    pub team: TeamCredentials,
    pub store: Store,
    pub store_dir: tempfile::TempDir,
    pub topology: Topology,
    pub amqp_url: String,
    database_name: String,
    admin_url: String,
    shutdown: CancellationToken,
    services: Vec<JoinHandle<anyhow::Result<()>>>,
}

fn admin_database_url() -> String {
    std::env::var("ATTACHE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn amqp_url() -> String {
    std::env::var("ATTACHE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("PostgreSQL answers at ATTACHE_TEST_DATABASE_URL (run scripts/ensure-services.sh)");
    tokio::spawn(connection);
    client
}

/// An empty database of one test, named `attache_test_{suffix}`.
pub struct TestDatabase {
    pub name: String,
    admin_url: String,
    pub args: DatabaseArgs,
}

impl TestDatabase {
    pub async fn create(suffix: &str) -> Self {
        let name = format!("attache_test_{suffix}");
        let admin_url = admin_database_url();
        admin_client(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("the test user may create databases");
        let mut database_url: url::Url = admin_url
            .parse()
            .expect("ATTACHE_TEST_DATABASE_URL is a URL");
        database_url.set_path(&name);
        let args = DatabaseArgs {
            database_url: database_url.to_string(),
            database_pool_size: 8,
            database_wait_timeout: Duration::from_secs(10),
        };
        Self {
            name,
            admin_url,
            args,
        }
    }

    /// Opens a direct connection to this database, for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.args.database_url).await
    }

    pub async fn drop(self) {
        drop_database(&self.admin_url, &self.name).await;
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    admin_client(admin_url)
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("the test database can be dropped");
}

impl Deployment {
    /// Starts a deployment and waits until its consumers are attached.
    pub async fn start(options: Options) -> Self {
        super::logs::install();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let TestDatabase {
            name: database_name,
            admin_url,
            args: database,
        } = TestDatabase::create(&suffix).await;
        let broker = BrokerArgs {
            amqp_url: amqp_url(),
            queue_prefix: format!("attache_test_{suffix}"),
            queue_delivery_limit: 5,
            broker_consumer_timeout: options.broker_consumer_timeout,
        };
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
        // Every source and receiver of the tests listens on loopback, which
        // the destination guard denies unless allowed.
        let egress = EgressArgs {
            egress_allow_direct: options.egress_members.is_empty(),
            egress_members: options.egress_members.clone(),
            egress_allow_cidrs: vec!["127.0.0.0/8".parse().expect("a valid range")],
            egress_failure_threshold: 3,
            egress_skip_for: Duration::from_secs(5),
        };
        let store_dir = tempfile::tempdir().expect("a temporary directory");
        let shutdown = CancellationToken::new();

        let producer = Producer::bind(ProducerConfig {
            database: database.clone(),
            broker: broker.clone(),
            limits: options.limits.clone(),
            relay: RelaySettings {
                relay_batch_size: 100,
                relay_poll_interval: Duration::from_millis(200),
            },
            egress: EgressArgs {
                egress_allow_cidrs: options.producer_allow_cidrs.clone(),
                ..egress.clone()
            },
            aws: options.aws.clone(),
            gcp: options.gcp.clone(),
            azure: options.azure.clone(),
            api_addr: loopback,
            admin_addr: loopback,
        })
        .await
        .expect("the producer starts");
        let api = producer.api_addr();
        let producer_admin = producer.admin_addr();
        let fetch_worker = FetchWorker::bind(FetchWorkerConfig {
            database: database.clone(),
            broker: broker.clone(),
            egress: egress.clone(),
            aws: options.aws.clone(),
            gcp: options.gcp.clone(),
            azure: options.azure.clone(),
            admin_addr: loopback,
            fetch_concurrency: options.fetch_concurrency,
            store_dir: store_dir.path().to_owned(),
            max_attachment_bytes: options.max_attachment_bytes,
            fetch_connect_timeout: Duration::from_secs(2),
            fetch_read_timeout: Duration::from_secs(5),
            fetch_total_timeout: Duration::from_secs(10),
            fetch_max_redirects: 3,
            fetch_max_attempts: options.fetch_max_attempts,
            fetch_retry_delay: Duration::from_millis(100),
            shutdown_deadline: Duration::from_secs(5),
        })
        .await
        .expect("the fetch-worker starts");
        let fetch_admin = fetch_worker.admin_addr();
        let callback_worker = CallbackWorker::bind(CallbackWorkerConfig {
            database: database.clone(),
            broker: broker.clone(),
            egress,
            admin_addr: loopback,
            callback_concurrency: 8,
            callback_concurrency_per_host: 4,
            callback_connect_timeout: Duration::from_secs(2),
            callback_timeout: Duration::from_secs(5),
            callback_max_attempts: options.callback_max_attempts,
            callback_retry_delay: Duration::from_millis(100),
            shutdown_deadline: Duration::from_secs(5),
        })
        .await
        .expect("the callback-worker starts");
        let callback_admin = callback_worker.admin_addr();

        let services = vec![
            tokio::spawn(producer.run(shutdown.clone())),
            tokio::spawn(fetch_worker.run(shutdown.clone())),
            tokio::spawn(callback_worker.run(shutdown.clone())),
        ];
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client");
        for admin in [producer_admin, fetch_admin, callback_admin] {
            let url = format!("http://{admin}/readyz");
            eventually(
                Duration::from_secs(20),
                "every binary to be ready",
                || async {
                    let response = http.get(&url).send().await.ok()?;
                    (response.status() == StatusCode::OK).then_some(())
                },
            )
            .await;
        }

        let store = Store::connect(&database).expect("a pool");
        let team = TeamCredentials::generate();
        store
            .create_team(team.new_team("test team"))
            .await
            .expect("a team row");
        Self {
            api,
            admin: [producer_admin, fetch_admin, callback_admin],
            http,
            team,
            store,
            store_dir,
            topology: Topology::new(broker.queue_prefix, broker.queue_delivery_limit),
            amqp_url: broker.amqp_url,
            database_name,
            admin_url,
            shutdown,
            services,
        }
    }

    /// Creates another team in this deployment.
    pub async fn create_team(&self, name: &str) -> TeamCredentials {
        let team = TeamCredentials::generate();
        self.store
            .create_team(team.new_team(name))
            .await
            .expect("a team row");
        team
    }

    /// A direct connection to this deployment's database, for assertions.
    pub async fn database(&self) -> tokio_postgres::Client {
        let mut url: url::Url = self.admin_url.parse().expect("a URL");
        url.set_path(&self.database_name);
        admin_client(url.as_str()).await
    }

    /// Returns the number of rows in `table` of the deployment's database.
    pub async fn row_count(&self, table: &str) -> i64 {
        self.database()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("the table exists")
            .get(0)
    }

    /// POSTs a task as this deployment's team.
    pub async fn submit(&self, body: &Value, idempotency_key: Option<&str>) -> (StatusCode, Value) {
        self.submit_raw(Some(&self.team.api_key), body.to_string(), idempotency_key)
            .await
    }

    /// POSTs a raw body with an optional API key.
    pub async fn submit_raw(
        &self,
        api_key: Option<&str>,
        body: String,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let sent = self.try_submit_raw(api_key, body, idempotency_key).await;
        let response = sent.expect("the API answers");
        let status = response.status();
        (status, response.json().await.expect("every answer is JSON"))
    }

    /// POSTs a raw body and returns the response, or the error of a request
    /// that got none.
    pub async fn try_submit_raw(
        &self,
        api_key: Option<&str>,
        body: String,
        idempotency_key: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("http://{}/v1/tasks", self.api))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = api_key {
            request = request.bearer_auth(key);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request.send().await
    }

    /// POSTs a JSON body to a path of the API as this deployment's team.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("http://{}{path}", self.api))
            .bearer_auth(&self.team.api_key)
            .json(body)
            .send()
            .await
            .expect("the API answers");
        let status = response.status();
        (status, response.json().await.expect("every answer is JSON"))
    }

    /// GETs a path of the API with an API key.
    pub async fn get(&self, path: &str, api_key: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.api))
            .bearer_auth(api_key)
            .send()
            .await
            .expect("the API answers");
        let status = response.status();
        (status, response.json().await.expect("every answer is JSON"))
    }

    /// Waits until the task is no longer pending and returns it.
    pub async fn finished_task(&self, task_id: &str) -> Value {
        let path = format!("/v1/tasks/{task_id}");
        eventually(Duration::from_secs(30), "the task to finish", || async {
            let (status, task) = self.get(&path, &self.team.api_key).await;
            assert_eq!(status, StatusCode::OK, "{task}");
            (task["status"] != "pending").then_some(task)
        })
        .await
    }

    /// Waits until the deployment's only callback is no longer pending and
    /// returns its status, attempts and last error.
    pub async fn settled_callback(&self) -> (String, i32, String) {
        let database = self.database().await;
        eventually(
            Duration::from_secs(20),
            "the callback to settle",
            || async {
                let row = database
                    .query_opt(
                        "SELECT status, attempts, coalesce(last_error, '') FROM callbacks",
                        &[],
                    )
                    .await
                    .unwrap()?;
                let status: String = row.get(0);
                (status != "pending").then(|| (status, row.get(1), row.get(2)))
            },
        )
        .await
    }

    /// Reads `kind`'s dead-letter queue depth through a passive declare.
    pub async fn dead_letter_depth(&self, kind: QueueKind) -> u32 {
        let connection = lapin::Connection::connect(&self.amqp_url, Default::default())
            .await
            .expect("RabbitMQ answers");
        let channel = connection.create_channel().await.expect("a channel");
        let queue = channel
            .queue_declare(
                self.topology.dead_letter_queue(kind).as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("the dead-letter queue exists");
        let _ = connection.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Stops the binaries, then removes the queues and the database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for service in self.services {
            let stopped = tokio::time::timeout(Duration::from_secs(30), service)
                .await
                .expect("every binary stops within its shutdown deadline");
            stopped
                .expect("no binary panicked")
                .expect("every binary stops cleanly");
        }
        self.store.close();
        remove_queues(&self.amqp_url, &self.topology).await;
        drop_database(&self.admin_url, &self.database_name).await;
    }
}

async fn remove_queues(amqp_url: &str, topology: &Topology) {
    let connection = lapin::Connection::connect(amqp_url, Default::default())
        .await
        .expect("RabbitMQ answers");
    let channel = connection.create_channel().await.expect("a channel");
    for kind in QueueKind::ALL {
        for queue in [topology.work_queue(kind), topology.dead_letter_queue(kind)] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
                .expect("the queue can be deleted");
        }
    }
    channel
        .exchange_delete(
            topology.dead_letter_exchange().as_str().into(),
            Default::default(),
        )
        .await
        .expect("the exchange can be deleted");
    let _ = connection.close(200, "done".into()).await;
}
