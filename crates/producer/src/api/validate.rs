//! Validation of `POST /v1/tasks` requests.
//!
//! The body is read as JSON and checked field by field, so every error names
//! its field (`attachments[2].uri`) instead of quoting a parser position.
//! Unknown fields are rejected, because a misspelt optional field would
//! otherwise be ignored silently.

use attache_domain::{AttachmentRef, ErrorCode, Provider};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use attache_egress::guard::DestinationPolicy;

use super::Limits;
use super::error::ApiError;

/// Maximum length of an `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
const MAX_CALLBACK_URL_LEN: usize = 2048;

/// A validated task request.
pub struct TaskRequest {
    pub callback_url: String,
    pub attachments: Vec<(String, Provider)>,
    pub metadata: Value,
    /// SHA-256 of the canonical request body, to recognise a retried request.
    pub request_hash: Vec<u8>,
}

/// Parses and validates a `POST /v1/tasks` request body.
pub fn task_request(
    body: &[u8],
    limits: &Limits,
    policy: &DestinationPolicy,
    enabled: &dyn Fn(Provider) -> bool,
) -> Result<TaskRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON ({error}): send an object with callback_url and attachments"),
        )
    })?;
    let Value::Object(object) = &value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object with callback_url and attachments",
        ));
    };
    if let Some(unknown) = object
        .keys()
        .find(|key| !["callback_url", "attachments", "metadata"].contains(&key.as_str()))
    {
        return Err(ApiError::field(
            "unknown_field",
            unknown.clone(),
            format!(
                "`{unknown}` is not a task field: the fields are callback_url, attachments and metadata"
            ),
        ));
    }

    let callback_url = callback_url(object.get("callback_url"), policy)?;
    let attachments = attachments(object.get("attachments"), limits, policy, enabled)?;
    let metadata = metadata(object.get("metadata"), limits)?;
    // The hash covers the request as accepted, not as written: key order,
    // a missing versus empty metadata object and the URL's letter case do
    // not make a retry look like a new request. serde_json's map is ordered
    // by key (the `preserve_order` feature is off).
    let uris: Vec<&str> = attachments.iter().map(|(uri, _)| uri.as_str()).collect();
    let canonical = serde_json::to_vec(&serde_json::json!({
        "callback_url": callback_url,
        "attachments": uris,
        "metadata": metadata,
    }))
    .expect("strings and a parsed JSON value always serialise");
    Ok(TaskRequest {
        callback_url,
        attachments,
        metadata,
        request_hash: Sha256::digest(&canonical).to_vec(),
    })
}

/// Reads and validates the optional `Idempotency-Key` header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::field(
            "invalid_idempotency_key",
            "Idempotency-Key",
            format!(
                "the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters, such as a UUID"
            ),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

fn callback_url(value: Option<&Value>, policy: &DestinationPolicy) -> Result<String, ApiError> {
    let field = "callback_url";
    let Some(Value::String(text)) = value else {
        return Err(ApiError::field(
            "invalid_request",
            field,
            "callback_url is required: a string with the http or https URL that receives the result",
        ));
    };
    let invalid = |why: &str| {
        ApiError::field(
            "invalid_callback_url",
            field,
            format!(
                "callback_url {why}: give an absolute http or https URL such as https://example.com/hooks/attache"
            ),
        )
    };
    if text.len() > MAX_CALLBACK_URL_LEN {
        return Err(invalid(&format!(
            "is longer than {MAX_CALLBACK_URL_LEN} bytes"
        )));
    }
    if text.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid("contains a space or control character"));
    }
    let url = url::Url::parse(text).map_err(|error| invalid(&format!("is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must use http or https"));
    }
    // The URL parser reads `http:///x` as host `x`; require the host to
    // follow `//` as written.
    let after_scheme = &text[url.scheme().len() + 1..];
    if !after_scheme.starts_with("//") || after_scheme[2..].starts_with(['/', '\\']) {
        return Err(invalid("has no host"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if url.port() == Some(0) {
        return Err(invalid("has port 0"));
    }
    policy.check_literal(&url).map_err(|denied| {
        ApiError::field(
            "destination_forbidden",
            field,
            format!("{denied}: give a public address"),
        )
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not carry credentials; verify the webhook signature instead",
        ));
    }
    Ok(url.to_string())
}

fn attachments(
    value: Option<&Value>,
    limits: &Limits,
    policy: &DestinationPolicy,
    enabled: &dyn Fn(Provider) -> bool,
) -> Result<Vec<(String, Provider)>, ApiError> {
    let field = "attachments";
    let Some(Value::Array(items)) = value else {
        return Err(ApiError::field(
            "invalid_request",
            field,
            "attachments is required: a list of objects such as {\"uri\": \"https://example.com/file.pdf\"}",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::field(
            "invalid_request",
            field,
            "attachments is empty: list at least one attachment",
        ));
    }
    let max = limits.max_attachments_per_task;
    if items.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_attachments",
            format!("a task may list at most {max} attachments, this one lists {}: split it into several tasks", items.len()),
        )
        .at(field));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| attachment(index, item, policy, enabled))
        .collect()
}

fn attachment(
    index: usize,
    item: &Value,
    policy: &DestinationPolicy,
    enabled: &dyn Fn(Provider) -> bool,
) -> Result<(String, Provider), ApiError> {
    let field = format!("attachments[{index}].uri");
    let Value::Object(object) = item else {
        return Err(ApiError::field(
            "invalid_request",
            format!("attachments[{index}]"),
            "each attachment must be an object such as {\"uri\": \"https://example.com/file.pdf\"}",
        ));
    };
    if let Some(unknown) = object.keys().find(|key| key.as_str() != "uri") {
        return Err(ApiError::field(
            "unknown_field",
            format!("attachments[{index}].{unknown}"),
            format!("`{unknown}` is not an attachment field: the only field is uri"),
        ));
    }
    let Some(Value::String(uri)) = object.get("uri") else {
        return Err(ApiError::field(
            "invalid_request",
            field,
            "uri is required: a string such as https://example.com/file.pdf",
        ));
    };
    let reference = AttachmentRef::parse(uri).map_err(|error| {
        let code = match error.code() {
            ErrorCode::UnsupportedScheme => "unsupported_scheme",
            _ => "invalid_uri",
        };
        ApiError::field(code, field.clone(), error.message())
    })?;
    let provider = reference.provider();
    if !enabled(provider) {
        return Err(ApiError::field(
            "unsupported_scheme",
            field,
            format!(
                "{provider} attachments are not enabled on this deployment yet: give a plain https URL, such as a pre-signed URL"
            ),
        ));
    }
    if let AttachmentRef::Http { url } = &reference {
        policy.check_literal(url).map_err(|denied| {
            ApiError::field(
                "destination_forbidden",
                field.clone(),
                format!("{denied}: give a public address"),
            )
        })?;
    }
    Ok((uri.clone(), provider))
}

fn metadata(value: Option<&Value>, limits: &Limits) -> Result<Value, ApiError> {
    let field = "metadata";
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(object @ Value::Object(_)) => {
            let size = serde_json::to_vec(object)
                .expect("a parsed JSON value always serialises")
                .len();
            let max = limits.max_metadata_bytes;
            if size > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "metadata_too_large",
                    format!("metadata takes {size} bytes as JSON, over the limit of {max}: keep ids and references there, not content"),
                )
                .at(field));
            }
            if contains_nul(object) {
                return Err(ApiError::field(
                    "invalid_request",
                    field,
                    "metadata contains a NUL character (\\u0000), which cannot be stored: remove it",
                ));
            }
            Ok(object.clone())
        }
        Some(_) => Err(ApiError::field(
            "invalid_request",
            field,
            "metadata must be a JSON object, such as {\"ticket\": \"T-1234\"}; omit it if there is none",
        )),
    }
}

/// Tells whether any key or string in `value` contains U+0000, which
/// PostgreSQL's jsonb rejects.
fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(object) => object
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}
