//! The API's error response: `{"error": {"code", "field", "message"}}`.
//!
//! `code` is stable and meant for programs. `message` is meant for people
//! and tells them what to change. `field` names the offending request field,
//! header or path parameter, or is `null` when no single one is at fault.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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

    /// Returns whether the error rejects a request before its body was read
    /// whole.
    fn rejects_unread_body(&self) -> bool {
        matches!(self.code, "request_too_large" | "request_timeout")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        REQUESTS_REJECTED.with_label_values(&[self.code]).inc();
        let body = json!({
            "error": { "code": self.code, "field": self.field, "message": self.message }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.rejects_unread_body() {
            // The server closes a connection whose body it did not read, so the
            // header keeps the client from reusing it for the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 requires a 401 to name the scheme it expects.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The API's sources, scanned for the error codes they return.
    const SOURCES: &[&str] = &[
        include_str!("auth.rs"),
        include_str!("body.rs"),
        include_str!("error.rs"),
        include_str!("mod.rs"),
        include_str!("replays.rs"),
        include_str!("tasks.rs"),
        include_str!("validate.rs"),
        include_str!("integrations/mod.rs"),
        include_str!("integrations/aws.rs"),
        include_str!("integrations/azure.rs"),
        include_str!("integrations/gcp.rs"),
    ];
    const GUIDE: &str = include_str!("../../../../docs/customer-guide.md");

    /// Returns the string literals passed as the code to `ApiError::new`
    /// (second argument), `Self::new`, `ApiError::field` and
    /// `consent_error` (first argument).
    fn codes_in_sources() -> BTreeSet<String> {
        let calls = [
            ("ApiError::new(", 1),
            ("Self::new(", 1),
            ("ApiError::field(", 0),
            ("consent_error(", 0),
        ];
        let mut codes = BTreeSet::new();
        for source in SOURCES {
            for (call, position) in calls {
                for (start, _) in source.match_indices(call) {
                    let arguments = &source[start + call.len()..];
                    let Some(argument) = arguments.split(',').nth(position) else {
                        continue;
                    };
                    let Some(code) = argument
                        .trim()
                        .strip_prefix('"')
                        .and_then(|rest| rest.strip_suffix('"'))
                    else {
                        continue;
                    };
                    if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    {
                        codes.insert(code.to_owned());
                    }
                }
            }
        }
        codes
    }

    #[test]
    fn every_error_code_is_documented() {
        let codes = codes_in_sources();
        assert!(codes.contains("integration_not_configured"), "{codes:?}");
        assert!(codes.contains("unsupported_media_type"), "{codes:?}");
        let openapi: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let listed = openapi["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["description"]
            .as_str()
            .expect("the Error schema describes its codes");
        for code in &codes {
            assert!(
                GUIDE.contains(&format!("`{code}`")),
                "docs/customer-guide.md does not list `{code}`"
            );
            let in_openapi = listed
                .split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .any(|word| word == code);
            assert!(in_openapi, "openapi.json's Error.code does not list {code}");
        }
    }
}
