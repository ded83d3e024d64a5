//! Reading JSON request bodies, shared by every route that takes one.
//!
//! [`JsonBody`] checks the `Content-Type` and `Content-Encoding` headers,
//! reads the body within the size limit and the body timeout, and rejects a
//! UTF-8 byte order mark. Each failure is the same JSON error on every
//! route. [`required_string`] and [`json_type`] let the parsers tell a
//! missing field from a field of the wrong JSON type.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;

/// The UTF-8 encoding of U+FEFF, which some editors write before a
/// document. RFC 8259 does not allow it in JSON sent over a network.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// A request body that was sent as uncompressed JSON and read whole.
pub struct JsonBody(pub Bytes);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        check_content_type(request.headers())?;
        check_content_encoding(request.headers())?;
        let max = state.limits().max_request_bytes;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| read_error(&rejection, max))?;
        if body.starts_with(BYTE_ORDER_MARK) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body starts with a UTF-8 byte order mark (EF BB BF), which JSON does not allow: send the JSON without it",
            ));
        }
        Ok(Self(body))
    }
}

/// Returns the 413 error for a body over `max` bytes.
pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!(
            "the request body is over {max} bytes: send a smaller body, such as a task with fewer attachments or less metadata"
        ),
    )
}

/// Accepts a missing `Content-Type`, `application/json` and any
/// `application/*+json` type, in UTF-8.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be JSON, but {what}: send the header `Content-Type: application/json` and a JSON body"),
        )
        .at("Content-Type")
    };
    let text = value
        .to_str()
        .map_err(|_| unsupported("Content-Type contains non-ASCII bytes"))?;
    let mut parts = text.split(';').map(str::trim);
    let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
    let is_json = media_type
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"));
    if !is_json {
        return Err(unsupported(&format!("Content-Type is `{media_type}`")));
    }
    for parameter in parts {
        let Some((name, charset)) = parameter.split_once('=') else {
            continue;
        };
        let charset = charset.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !charset.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported(&format!(
                "the charset is `{charset}`, and JSON bodies are read as UTF-8"
            )));
        }
    }
    Ok(())
}

/// Accepts a missing `Content-Encoding` or `identity`.
fn check_content_encoding(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let identity = value
        .to_str()
        .is_ok_and(|text| text.trim().eq_ignore_ascii_case("identity"));
    if identity {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "compressed request bodies are not accepted: send the JSON uncompressed and without a Content-Encoding header",
    )
    .at("Content-Encoding"))
}

/// Turns a failure to read the body into the API's error for it.
fn read_error(rejection: &BytesRejection, max: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(max);
    }
    let timed_out = std::iter::successors(
        Some(rejection as &(dyn std::error::Error + 'static)),
        |error| error.source(),
    )
    .any(|error| error.is::<tower_http::timeout::TimeoutError>());
    if timed_out {
        let seconds = super::BODY_TIMEOUT.as_secs();
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {seconds} seconds of the headers: send the whole body without pausing, then retry the request"
            ),
        );
    }
    tracing::debug!(error = %rejection, "request body could not be read");
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the request body could not be read, because the connection ended or the chunked encoding was malformed: send the request again",
    )
}

/// Names the JSON type of `value`, with an article, for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Returns the string `value` of the required `field`. A missing or null
/// field is "required", and another JSON type "must be a string". The
/// message ends with "give {expected}".
pub fn required_string<'a>(
    value: Option<&'a Value>,
    field: &str,
    expected: &str,
) -> Result<&'a str, ApiError> {
    match value {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(ApiError::field(
            "invalid_request",
            field,
            format!("{field} is required: give {expected}"),
        )),
        Some(other) => Err(ApiError::field(
            "invalid_request",
            field,
            format!(
                "{field} must be a string, not {}: give {expected}",
                json_type(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use attache_config::DatabaseArgs;
    use attache_egress::guard::DestinationPolicy;
    use attache_store::Store;
    use axum::body::Body;

    use super::*;
    use crate::api::Limits;

    fn state() -> AppState {
        // The pool connects lazily, and reading a body never queries it.
        let store = Store::connect(&DatabaseArgs {
            database_url: "postgres://nobody@127.0.0.1:1/none".to_owned(),
            database_pool_size: 1,
            database_wait_timeout: std::time::Duration::from_millis(10),
        })
        .expect("building a lazy pool opens no connection");
        AppState::new(store, Limits::default(), DestinationPolicy::default())
    }

    async fn read(headers: &[(&str, &str)], body: Body) -> Result<Bytes, ApiError> {
        let mut request = Request::builder().method("POST").uri("/v1/replays");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).unwrap();
        JsonBody::from_request(request, &state())
            .await
            .map(|JsonBody(bytes)| bytes)
    }

    #[tokio::test]
    async fn json_content_types_are_accepted() {
        for content_type in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/merge-patch+json",
            "application/json; charset=\"utf-8\"",
        ] {
            let read = read(&[("content-type", content_type)], Body::from("{}")).await;
            assert!(read.is_ok(), "{content_type}: {:?}", read.err());
        }
        assert!(read(&[], Body::from("{}")).await.is_ok());
    }

    #[tokio::test]
    async fn other_content_types_return_415() {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json; charset=latin1",
        ] {
            let error = read(&[("content-type", content_type)], Body::from("{}"))
                .await
                .unwrap_err();
            assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert_eq!(error.code, "unsupported_media_type");
            assert_eq!(error.field.as_deref(), Some("Content-Type"));
            assert!(error.message.contains("application/json"), "{error:?}");
        }
    }

    #[tokio::test]
    async fn compressed_body_returns_415() {
        let error = read(&[("content-encoding", "gzip")], Body::from("{}"))
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error.field.as_deref(), Some("Content-Encoding"));
        assert!(error.message.contains("uncompressed"), "{error:?}");
        assert!(
            read(&[("content-encoding", "identity")], Body::from("{}"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn byte_order_mark_is_named() {
        let error = read(&[], Body::from(&b"\xEF\xBB\xBF{}"[..]))
            .await
            .unwrap_err();
        assert_eq!(error.code, "invalid_json");
        assert!(error.message.contains("byte order mark"), "{error:?}");
    }

    #[test]
    fn wrong_type_is_not_reported_missing() {
        let number = serde_json::json!(5);
        let error = required_string(Some(&number), "kind", "\"attachments\"").unwrap_err();
        assert_eq!(
            error.message,
            "kind must be a string, not a number: give \"attachments\""
        );
        let error = required_string(None, "kind", "\"attachments\"").unwrap_err();
        assert_eq!(error.message, "kind is required: give \"attachments\"");
    }
}
