//! `/v1/integrations/{provider}`: a team's settings for reading from its
//! own cloud storage.
//!
//! - [`aws`]: delegated S3 access through the team's role.
//! - [`gcp`]: Cloud Storage access by impersonating the team's service
//!   account.
//! - [`azure`]: Blob Storage access through our service principal in the
//!   tenant that granted the team's admin consent.

pub mod aws;
pub mod azure;
pub mod gcp;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Parses `body` as a JSON object whose keys are all in `fields`.
fn object(body: &[u8], fields: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON ({error})"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    if let Some(unknown) = object.keys().find(|key| !fields.contains(&key.as_str())) {
        return Err(ApiError::field(
            "unknown_field",
            unknown.clone(),
            format!(
                "`{unknown}` is not a field here: the fields are {}",
                fields.join(", ")
            ),
        ));
    }
    Ok(object)
}
