//! The task API.
//!
//! Routes are declared in [`paths`] and documented in `openapi.json` next to
//! this crate's manifest, and a test checks that the two match. Every
//! rejection is a JSON [`error::ApiError`] with a stable code, the offending
//! field and a message that states what to change.

pub mod auth;
mod body;
pub mod error;
mod integrations;
pub mod replays;
mod tasks;
mod validate;

use std::sync::{Arc, OnceLock};

use attache_egress::guard::DestinationPolicy;
use attache_store::batch::{self, Batcher};
use attache_store::tasks::{Inserted, NewTask};
use attache_store::{Store, StoreError};
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Args;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::metrics::TASKS_ACCEPTED;

pub use validate::MAX_IDEMPOTENCY_KEY_LEN;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The route paths, in axum's syntax.
pub mod paths {
    pub const TASKS: &str = "/v1/tasks";
    pub const TASK: &str = "/v1/tasks/{task_id}";
    pub const REPLAYS: &str = "/v1/replays";
    pub const AWS: &str = "/v1/integrations/aws";
    pub const AWS_VERIFY: &str = "/v1/integrations/aws/verify";
    pub const GCP: &str = "/v1/integrations/gcp";
    pub const GCP_VERIFY: &str = "/v1/integrations/gcp/verify";
    pub const AZURE: &str = "/v1/integrations/azure";
    pub const AZURE_CONNECT: &str = "/v1/integrations/azure/connect";
    pub const AZURE_CONSENT: &str = "/v1/integrations/azure/consent";
    pub const AZURE_VERIFY: &str = "/v1/integrations/azure/verify";
    pub const OPENAPI: &str = "/v1/openapi.json";

    /// Every (method, path) pair the router serves.
    pub const ALL: &[(&str, &str)] = &[
        ("post", TASKS),
        ("get", TASK),
        ("post", REPLAYS),
        ("get", AWS),
        ("put", AWS),
        ("delete", AWS),
        ("post", AWS_VERIFY),
        ("get", GCP),
        ("put", GCP),
        ("delete", GCP),
        ("post", GCP_VERIFY),
        ("get", AZURE),
        ("delete", AZURE),
        ("post", AZURE_CONNECT),
        ("get", AZURE_CONSENT),
        ("post", AZURE_VERIFY),
        ("get", OPENAPI),
    ];
}

/// Request limits.
#[derive(Args, Clone, Debug)]
pub struct Limits {
    /// Maximum number of attachments in one task, at least 1.
    #[arg(long, env = "ATTACHE_MAX_ATTACHMENTS_PER_TASK", default_value_t = 100, value_parser = at_least_one)]
    pub max_attachments_per_task: usize,

    /// Maximum size of the `metadata` object, in bytes of compact JSON, at
    /// least 1.
    #[arg(long, env = "ATTACHE_MAX_METADATA_BYTES", default_value_t = 16 * 1024, value_parser = at_least_one)]
    pub max_metadata_bytes: usize,

    /// Maximum size of a request body, in bytes, at least 1.
    #[arg(long, env = "ATTACHE_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024, value_parser = at_least_one)]
    pub max_request_bytes: usize,
}

/// Parses a limit, which must be a whole number of at least 1: a limit of 0
/// would reject every request.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("a limit of 0 would reject every request: give 1 or more".to_owned()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("`{text}` is not a whole number: give 1 or more")),
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attachments_per_task: 100,
            max_metadata_bytes: 16 * 1024,
            max_request_bytes: 1024 * 1024,
        }
    }
}

/// State shared by the API handlers: the store and the request limits.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    limits: Limits,
    policy: DestinationPolicy,
    aws: Option<Arc<attache_aws::Aws>>,
    gcp: Option<Arc<attache_gcp::Gcp>>,
    azure: Option<Arc<attache_azure::Azure>>,
    /// Wakes this process's outbox relay after a task is accepted.
    relay_wake: Option<Arc<tokio::sync::Notify>>,
    /// Inserts the tasks of concurrent requests together, started by the
    /// first request because it needs the runtime.
    inserter: OnceLock<Batcher<Arc<NewTask>, Inserted>>,
    key_cache: auth::KeyCache,
}

impl AppState {
    /// `policy` rejects callback and attachment URLs whose host is a
    /// non-public IP literal at submission; host names are vetted by the
    /// workers when they resolve them.
    pub fn new(store: Store, limits: Limits, policy: DestinationPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                limits,
                policy,
                aws: None,
                gcp: None,
                azure: None,
                relay_wake: None,
                inserter: OnceLock::new(),
                key_cache: auth::KeyCache::default(),
            }),
        }
    }

    /// Applies `change` to the state while it is built, before it is shared.
    fn modified(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| {
            unreachable!("the state is configured while building, before it is shared")
        });
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Lets the API wake the outbox relay as soon as it accepts a task.
    pub fn with_relay_wake(self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.modified(|inner| inner.relay_wake = Some(wake))
    }

    /// Inserts `task` as [`Store::insert_task`] does, in one statement and
    /// one commit with the tasks of concurrent requests. The batch counts
    /// the tasks it created and wakes the relay, so both happen even when
    /// the client that sent a task has gone.
    async fn insert_task(&self, task: Arc<NewTask>) -> Result<Inserted, StoreError> {
        let inserter = self.inner.inserter.get_or_init(|| {
            let store = self.inner.store.clone();
            let relay_wake = self.inner.relay_wake.clone();
            Batcher::spawn("task_insert", move |tasks: Vec<Arc<NewTask>>| {
                let store = store.clone();
                let relay_wake = relay_wake.clone();
                async move {
                    let outcomes = insert_batch(&store, &tasks).await;
                    let created = outcomes
                        .iter()
                        .filter(|outcome| matches!(outcome, Ok(Inserted::Created)))
                        .count();
                    if created > 0 {
                        TASKS_ACCEPTED.inc_by(created as u64);
                        if let Some(wake) = &relay_wake {
                            wake.notify_one();
                        }
                    }
                    outcomes
                }
            })
        });
        inserter.call(task).await
    }

    /// Wakes the relay, if this process runs one.
    fn wake_relay(&self) {
        if let Some(wake) = &self.inner.relay_wake {
            wake.notify_one();
        }
    }

    /// Enables `s3://` attachments and the AWS integration routes.
    pub fn with_aws(self, aws: Arc<attache_aws::Aws>) -> Self {
        self.modified(|inner| inner.aws = Some(aws))
    }

    /// Enables `gs://` attachments and the GCP integration routes.
    pub fn with_gcp(self, gcp: Arc<attache_gcp::Gcp>) -> Self {
        self.modified(|inner| inner.gcp = Some(gcp))
    }

    /// Enables Azure blob attachments and the Azure integration routes.
    pub fn with_azure(self, azure: Arc<attache_azure::Azure>) -> Self {
        self.modified(|inner| inner.azure = Some(azure))
    }

    fn azure(&self) -> Option<&Arc<attache_azure::Azure>> {
        self.inner.azure.as_ref()
    }

    fn aws(&self) -> Option<&Arc<attache_aws::Aws>> {
        self.inner.aws.as_ref()
    }

    fn gcp(&self) -> Option<&Arc<attache_gcp::Gcp>> {
        self.inner.gcp.as_ref()
    }

    /// Tells whether attachments of `provider` are accepted.
    fn enabled(&self, provider: attache_domain::Provider) -> bool {
        use attache_domain::Provider;
        match provider {
            Provider::Http => true,
            Provider::S3 => self.aws().is_some(),
            Provider::Gcs => self.gcp().is_some(),
            Provider::AzureBlob => self.azure().is_some(),
        }
    }

    fn policy(&self) -> &DestinationPolicy {
        &self.inner.policy
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn key_cache(&self) -> &auth::KeyCache {
        &self.inner.key_cache
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

/// Time allowed for a request body to arrive once its headers have.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Inserts a batch of tasks in one statement. When PostgreSQL rejects that
/// statement (a constraint, invalid data or a deadlock), nothing was
/// written, and each task is inserted alone, so the others still succeed.
async fn insert_batch(store: &Store, tasks: &[Arc<NewTask>]) -> Vec<Result<Inserted, StoreError>> {
    match store.insert_tasks(tasks).await {
        Ok(outcomes) => outcomes,
        Err(error) if tasks.len() > 1 && error.is_statement_error() => {
            tracing::warn!(%error, tasks = tasks.len(), "a task insert batch was rejected; inserting its tasks one by one");
            let mut outcomes = Vec::with_capacity(tasks.len());
            for task in tasks {
                outcomes.push(store.insert_task(task).await);
            }
            outcomes
        }
        Err(error) => batch::shared_error(error, tasks.len()),
    }
}

/// Responds 413 as soon as a request announces a body over the limit,
/// before reading any of it.
async fn reject_oversized(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let max = state.limits().max_request_bytes;
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max as u64) {
        return body::too_large(max).into_response();
    }
    next.run(request).await
}

/// Builds the API router. Unknown routes and methods get JSON errors, and
/// request bodies are limited to `max_request_bytes`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits().max_request_bytes;
    Router::new()
        .route(paths::TASKS, post(tasks::create))
        .route(paths::TASK, get(tasks::get))
        .route(paths::REPLAYS, post(replays::create))
        .route(
            paths::AWS,
            get(integrations::aws::show)
                .put(integrations::aws::link)
                .delete(integrations::aws::unlink),
        )
        .route(paths::AWS_VERIFY, post(integrations::aws::verify))
        .route(
            paths::GCP,
            get(integrations::gcp::show)
                .put(integrations::gcp::link)
                .delete(integrations::gcp::unlink),
        )
        .route(paths::GCP_VERIFY, post(integrations::gcp::verify))
        .route(
            paths::AZURE,
            get(integrations::azure::show).delete(integrations::azure::unlink),
        )
        .route(paths::AZURE_CONNECT, post(integrations::azure::connect))
        .route(paths::AZURE_CONSENT, get(integrations::azure::consent))
        .route(paths::AZURE_VERIFY, post(integrations::azure::verify))
        .route(
            paths::OPENAPI,
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // A client that stops sending its body mid-way gets a 408 error
        // (see `body::JsonBody`) instead of holding the connection.
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            reject_oversized,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use attache_config::DatabaseArgs;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn limits_reject_zero_and_non_numbers() {
        assert_eq!(at_least_one("1"), Ok(1));
        assert_eq!(
            at_least_one("0"),
            Err("a limit of 0 would reject every request: give 1 or more".to_owned())
        );
        assert_eq!(
            at_least_one("-1"),
            Err("`-1` is not a whole number: give 1 or more".to_owned())
        );
    }

    /// Returns the (method, path) pairs that the OpenAPI document describes.
    /// OpenAPI and axum 0.8 both write path parameters as `{task_id}`, so
    /// the paths compare as they are.
    fn documented() -> BTreeSet<(String, String)> {
        let document: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON");
        let mut operations = BTreeSet::new();
        for (path, item) in document["paths"]
            .as_object()
            .expect("openapi.json has a `paths` object")
        {
            for method in item
                .as_object()
                .expect("each OpenAPI path item is an object")
                .keys()
            {
                operations.insert((method.clone(), path.clone()));
            }
        }
        operations
    }

    fn router_without_database() -> Router {
        // The pool connects lazily, and these requests never reach the
        // database.
        let store = Store::connect(&DatabaseArgs {
            database_url: "postgres://nobody@127.0.0.1:1/none".to_owned(),
            database_pool_size: 1,
            database_wait_timeout: std::time::Duration::from_millis(10),
        })
        .expect("building a lazy pool opens no connection");
        router(AppState::new(
            store,
            Limits::default(),
            DestinationPolicy::default(),
        ))
    }

    #[test]
    fn openapi_paths_match_router() {
        let served: BTreeSet<(String, String)> = paths::ALL
            .iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(documented(), served);
    }

    /// Sends a request and returns the response status, with the error code
    /// if the response is an API error.
    async fn send(method: &str, uri: &str) -> (StatusCode, Option<String>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = router_without_database().oneshot(request).await.unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value["error"]["code"].as_str().map(str::to_owned));
        (status, code)
    }

    #[tokio::test]
    async fn documented_operations_reach_a_handler() {
        for (method, path) in documented() {
            let uri = path.replace("{task_id}", "01a241bb-2764-761a-b971-95457ae854b8");
            let (status, code) = send(&method.to_uppercase(), &uri).await;
            let unrouted = matches!(
                code.as_deref(),
                Some("route_not_found" | "method_not_allowed")
            );
            assert!(!unrouted, "{method} {uri} returned {status} {code:?}");
        }
    }

    #[tokio::test]
    async fn unknown_route_or_method_returns_json_error() {
        let (status, code) = send("GET", "/v2/tasks").await;
        assert_eq!(
            (status, code.as_deref()),
            (StatusCode::NOT_FOUND, Some("route_not_found"))
        );
        let (status, code) = send("DELETE", paths::TASKS).await;
        assert_eq!(
            (status, code.as_deref()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
    }
}
