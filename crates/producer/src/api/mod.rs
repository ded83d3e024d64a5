//! The task API.
//!
//! Routes are declared in [`paths`] and documented in `openapi.json` next to
//! this crate's manifest; a test keeps the two in step. Every rejection is a
//! JSON [`error::ApiError`] with a stable code, the offending field and what
//! to change.

pub mod auth;
pub mod error;
mod tasks;
mod validate;

use std::sync::Arc;

use attache_store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use clap::Args;

pub use validate::MAX_IDEMPOTENCY_KEY_LEN;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The route paths, in axum's syntax.
pub mod paths {
    pub const TASKS: &str = "/v1/tasks";
    pub const TASK: &str = "/v1/tasks/{task_id}";
    pub const OPENAPI: &str = "/v1/openapi.json";

    /// Every (method, path) the router serves.
    pub const ALL: &[(&str, &str)] = &[("post", TASKS), ("get", TASK), ("get", OPENAPI)];
}

/// Request limits.
#[derive(Args, Clone, Debug)]
pub struct Limits {
    /// Most attachments one task may list.
    #[arg(long, env = "ATTACHE_MAX_ATTACHMENTS_PER_TASK", default_value_t = 100)]
    pub max_attachments_per_task: usize,

    /// Largest `metadata` object, in bytes of compact JSON.
    #[arg(long, env = "ATTACHE_MAX_METADATA_BYTES", default_value_t = 16 * 1024)]
    pub max_metadata_bytes: usize,

    /// Largest request body, in bytes.
    #[arg(long, env = "ATTACHE_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
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

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    limits: Limits,
}

impl AppState {
    pub fn new(store: Store, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner { store, limits }),
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits().max_request_bytes;
    Router::new()
        .route(paths::TASKS, post(tasks::create))
        .route(paths::TASK, get(tasks::get))
        .route(
            paths::OPENAPI,
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
