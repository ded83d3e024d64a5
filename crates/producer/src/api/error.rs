//! The API's error response: `{"error": {"code", "field", "message"}}`.
//!
//! `code` is stable and meant for programs. `message` is meant for people
//! and tells them what to change. `field` names the offending request field,
//! header or path parameter, or is `null` when no single one is at fault.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::REQUESTS_REJECTED;

/// A rejected request, rendered as the JSON error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    /// Creates a 400 error about one request field.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).at(field)
    }

    /// Sets the offending field, header or path parameter.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Logs an internal failure and returns a 503 `unavailable` error that
    /// asks the client to retry. The response does not show the cause.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed with an internal error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service cannot complete the request right now; retry it with the same Idempotency-Key",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        REQUESTS_REJECTED.with_label_values(&[self.code]).inc();
        let body = json!({
            "error": { "code": self.code, "field": self.field, "message": self.message }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<attache_store::StoreError> for ApiError {
    fn from(error: attache_store::StoreError) -> Self {
        Self::internal(error)
    }
}

pub async fn not_found_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route: see /v1/openapi.json for the API's routes",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method: see /v1/openapi.json",
    )
}
