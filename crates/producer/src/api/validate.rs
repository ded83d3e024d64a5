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
use super::body::{json_type, required_string};
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
    // The hash covers the request as accepted, not as written. Key order
    // and a missing versus empty metadata object do not make a retry look
    // like a new request. Neither does the letter case of a URL's scheme or
    // host, because callback_url and every attachment URI go through
    // `url_for_hash`. serde_json's map is ordered by key (the
    // `preserve_order` feature is off).
    let uris: Vec<String> = attachments
        .iter()
        .map(|(uri, _)| url_for_hash(uri))
        .collect();
    let canonical = serde_json::to_vec(&serde_json::json!({
        "callback_url": url_for_hash(&callback_url),
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

/// Returns `text`, a callback URL or attachment URI that passed validation,
/// as the idempotency hash covers it. An http or https URL is serialised by
/// the URL parser, which lowercases the scheme and host as callback_url is
/// stored. An `s3://` or `gs://` URI gets a lowercase scheme and is kept
/// otherwise, because its bucket is lowercase already and its key is byte
/// for byte.
fn url_for_hash(text: &str) -> String {
    if let Ok(url) = url::Url::parse(text)
        && matches!(url.scheme(), "http" | "https")
    {
        return url.into();
    }
    match text.split_once(':') {
        Some((scheme, rest)) => format!("{}:{rest}", scheme.to_ascii_lowercase()),
        None => text.to_owned(),
    }
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
    let text = required_string(
        value,
        field,
        "the http or https URL that receives the result, as a string",
    )?;
    let invalid = |why: &str| {
        ApiError::field(
            "invalid_callback_url",
            field,
            format!(
                "callback_url {why}: give an absolute http or https URL such as https://example.com/hooks/attache"
            ),
        )
    };
    if text.is_empty() {
        return Err(invalid("is empty"));
    }
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
    let example = "a list of objects such as {\"uri\": \"https://example.com/file.pdf\"}";
    let items = match value {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "invalid_request",
                field,
                format!("attachments is required: give {example}"),
            ));
        }
        Some(other) => {
            return Err(ApiError::field(
                "invalid_request",
                field,
                format!(
                    "attachments must be a list, not {}: give {example}",
                    json_type(other)
                ),
            ));
        }
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
    let uri = required_string(
        object.get("uri"),
        &field,
        "the attachment's URL or URI as a string, such as \"https://example.com/file.pdf\"",
    )?;
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
                "{} attachments are not enabled on this deployment: give a plain https URL, such as a pre-signed URL, or ask the operator to enable them",
                customer_name(provider)
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
    Ok((uri.to_owned(), provider))
}

/// Names `provider` as customers know it, with the URI form it is read from.
fn customer_name(provider: Provider) -> &'static str {
    match provider {
        Provider::S3 => "Amazon S3 (s3:// and S3 https URLs)",
        Provider::Gcs => "Google Cloud Storage (gs://)",
        Provider::AzureBlob => "Azure Blob Storage (https://ACCOUNT.blob.core.windows.net)",
        Provider::Http => "http and https",
    }
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
            if let Some(number) = huge_number(object) {
                return Err(ApiError::field(
                    "invalid_request",
                    field,
                    format!(
                        "metadata contains the number {number}, which is not below {MAX_METADATA_NUMBER:e} in magnitude and which many JSON parsers cannot read back: send it as a string"
                    ),
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

/// The magnitude that numbers in metadata must stay below. PostgreSQL's
/// jsonb keeps a number's exact decimal digits, and those of a value near
/// the largest double overflow common JSON parsers, such as serde_json's,
/// in the API's clients and the callbacks' receivers.
const MAX_METADATA_NUMBER: f64 = 1e308;

/// Returns the first number in `value` whose magnitude is not below
/// [`MAX_METADATA_NUMBER`].
fn huge_number(value: &Value) -> Option<&serde_json::Number> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .is_some_and(|float| float.abs() >= MAX_METADATA_NUMBER)
            .then_some(number),
        Value::Array(items) => items.iter().find_map(huge_number),
        Value::Object(object) => object.values().find_map(huge_number),
        Value::Null | Value::Bool(_) | Value::String(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<TaskRequest, ApiError> {
        task_request(
            body.to_string().as_bytes(),
            &Limits::default(),
            &DestinationPolicy::default(),
            &|provider| provider == Provider::Http,
        )
    }

    fn rejected(body: serde_json::Value) -> ApiError {
        match parse(body) {
            Ok(_) => panic!("the request was accepted"),
            Err(error) => error,
        }
    }

    fn hash(callback_url: &str, uri: &str) -> Vec<u8> {
        match parse(
            serde_json::json!({"callback_url": callback_url, "attachments": [{"uri": uri}]}),
        ) {
            Ok(request) => request.request_hash,
            Err(error) => panic!("{callback_url} {uri}: {error:?}"),
        }
    }

    #[test]
    fn wrong_types_are_not_reported_missing() {
        let cases = [
            (
                serde_json::json!({"callback_url": 5, "attachments": [{"uri": "https://example.com/a"}]}),
                "callback_url",
                "callback_url must be a string, not a number",
            ),
            (
                serde_json::json!({"callback_url": "https://example.com/h", "attachments": "https://example.com/a"}),
                "attachments",
                "attachments must be a list, not a string",
            ),
            (
                serde_json::json!({"callback_url": "https://example.com/h", "attachments": [{"uri": ["https://example.com/a"]}]}),
                "attachments[0].uri",
                "attachments[0].uri must be a string, not a list",
            ),
        ];
        for (body, field, start) in cases {
            let error = rejected(body);
            assert_eq!(error.code, "invalid_request", "{field}");
            assert_eq!(error.field.as_deref(), Some(field));
            assert!(error.message.starts_with(start), "{}", error.message);
        }
    }

    #[test]
    fn empty_callback_url_is_named_empty() {
        let error = rejected(
            serde_json::json!({"callback_url": "", "attachments": [{"uri": "https://example.com/a"}]}),
        );
        assert_eq!(error.code, "invalid_callback_url");
        assert!(
            error.message.starts_with("callback_url is empty"),
            "{}",
            error.message
        );
    }

    #[test]
    fn hash_ignores_scheme_and_host_case() {
        let lower = hash("https://example.com/h", "https://files.example.com/a");
        assert_eq!(
            lower,
            hash("HTTPS://EXAMPLE.com/h", "https://files.example.com/a")
        );
        assert_eq!(
            lower,
            hash("https://example.com/h", "HTTPS://Files.Example.COM/a")
        );
        // The path is case-sensitive on most servers.
        assert_ne!(
            lower,
            hash("https://example.com/h", "https://files.example.com/A")
        );
    }

    #[test]
    fn hash_ignores_storage_scheme_case() {
        let enabled = |_| true;
        let request = |uri: &str| {
            let body = serde_json::json!({"callback_url": "https://example.com/h", "attachments": [{"uri": uri}]});
            task_request(
                body.to_string().as_bytes(),
                &Limits::default(),
                &DestinationPolicy::default(),
                &enabled,
            )
            .unwrap_or_else(|error| panic!("{uri}: {error:?}"))
            .request_hash
        };
        assert_eq!(request("s3://bucket/Key"), request("S3://bucket/Key"));
        assert_eq!(request("gs://bucket/Key"), request("GS://bucket/Key"));
        assert_ne!(request("gs://bucket/Key"), request("gs://bucket/key"));
    }

    #[test]
    fn disabled_provider_is_named_for_customers() {
        let cases = [
            ("gs://bucket/object", "Google Cloud Storage (gs://)"),
            ("s3://bucket/key", "Amazon S3"),
            (
                "https://account.blob.core.windows.net/container/blob",
                "Azure Blob Storage",
            ),
        ];
        for (uri, name) in cases {
            let error = rejected(
                serde_json::json!({"callback_url": "https://example.com/h", "attachments": [{"uri": uri}]}),
            );
            assert_eq!(error.code, "unsupported_scheme", "{uri}");
            assert!(error.message.starts_with(name), "{}", error.message);
            for internal in ["gcs ", "azure_blob", "s3 attachments"] {
                assert!(!error.message.contains(internal), "{}", error.message);
            }
        }
    }

    #[test]
    fn huge_metadata_number_is_rejected() {
        for number in ["1.7976931348623157e308", "-1e308", "1e308"] {
            let body = format!(
                r#"{{"callback_url": "https://example.com/h", "attachments": [{{"uri": "https://example.com/a"}}], "metadata": {{"nested": [1, {{"v": {number}}}]}}}}"#
            );
            let error = rejected(serde_json::from_str(&body).unwrap());
            assert_eq!(error.field.as_deref(), Some("metadata"), "{number}");
            assert!(
                error.message.contains("send it as a string"),
                "{}",
                error.message
            );
        }
        let accepted = parse(serde_json::json!({
            "callback_url": "https://example.com/h",
            "attachments": [{"uri": "https://example.com/a"}],
            "metadata": {"large": 9.9e307, "small": -9.9e307, "plain": [1, 2.5]},
        }));
        assert!(accepted.is_ok());
    }
}
