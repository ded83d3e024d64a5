//! Plain http(s) GET through the egress.
//!
//! Automatic decompression is off (the reqwest features that provide it are
//! not enabled), so the stored bytes and their sha256 are exactly what the
//! source sent. The egress follows redirects and vets every hop. Status
//! codes map to error codes in [`classify_status`].

use async_trait::async_trait;
use attache_domain::{AttachmentRef, ErrorCode};
use attache_egress::{Egress, SendError};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::{FetchError, FetchRequest, Fetcher, ObjectStream, Opened};

/// Longest content type kept; longer values are dropped.
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Fetches `AttachmentRef::Http` URLs.
pub struct HttpFetcher {
    egress: Egress,
}

impl HttpFetcher {
    pub fn new(egress: Egress) -> Self {
        Self { egress }
    }
}

#[async_trait]
impl Fetcher for HttpFetcher {
    async fn open(&self, request: &FetchRequest<'_>) -> Opened {
        let AttachmentRef::Http { url } = request.reference else {
            let error = FetchError::new(
                ErrorCode::UnsupportedScheme,
                format!(
                    "the HTTP fetcher cannot fetch {} reference",
                    request.reference.provider().name_with_article()
                ),
            );
            return Opened {
                egress_member: None,
                object: Err(error),
            };
        };
        let sent = self.egress.get(url.clone()).await;
        let object = match sent.result {
            Ok(response) => open_body(response, request.max_bytes),
            Err(error) => Err(classify_send_error(error)),
        };
        Opened {
            egress_member: sent.member,
            object,
        }
    }
}

/// Checks a response's status and announced size and returns its body.
pub(super) fn open_body(
    response: reqwest::Response,
    max_bytes: u64,
) -> Result<ObjectStream, FetchError> {
    if let Some(error) = classify_status(response.status()) {
        return Err(error);
    }
    let announced = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = announced.filter(|length| *length > max_bytes) {
        return Err(FetchError::too_large(length, max_bytes));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.len() <= MAX_CONTENT_TYPE_LEN)
        .map(str::to_owned);
    let body = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(classify_error))
        .boxed();
    Ok(ObjectStream { content_type, body })
}

/// Maps an egress failure to its error code.
pub(super) fn classify_send_error(error: SendError) -> FetchError {
    match error {
        SendError::Forbidden(denied) => {
            FetchError::new(ErrorCode::DestinationForbidden, denied.to_string())
        }
        SendError::Unavailable => FetchError::new(ErrorCode::EgressUnavailable, error.to_string()),
        SendError::Redirect(message) => FetchError::new(ErrorCode::RedirectRejected, message),
        SendError::Http(error) => classify_error(error),
    }
}

/// Maps a non-success status to its error; `None` for 2xx.
fn classify_status(status: StatusCode) -> Option<FetchError> {
    if status.is_success() {
        return None;
    }
    let (code, hint) = match status.as_u16() {
        404 | 410 => (
            ErrorCode::NotFound,
            "check that the URL names an existing file",
        ),
        401 | 403 => (
            ErrorCode::AccessDenied,
            "make the file public or give a pre-signed URL",
        ),
        429 => (
            ErrorCode::Throttled,
            "the source is limiting its request rate",
        ),
        500..=599 => (
            ErrorCode::ServerError,
            "the source failed to serve the file",
        ),
        300..=399 => (
            ErrorCode::RedirectRejected,
            "the redirect has no Location to follow; give the final URL",
        ),
        _ => (
            ErrorCode::UnexpectedStatus,
            "the source refused the request",
        ),
    };
    Some(FetchError::new(
        code,
        format!("the source answered HTTP {status}: {hint}"),
    ))
}

/// Maps a transport error to its error code. The URL is stripped from the
/// message: its query may be a signature.
fn classify_error(error: reqwest::Error) -> FetchError {
    let (code, summary) = if error.is_timeout() {
        (
            ErrorCode::Timeout,
            "the source did not respond in time, or stopped sending the body",
        )
    } else if error.is_connect() {
        (
            ErrorCode::ConnectionFailed,
            "could not connect to the source: check the host name and that it accepts connections",
        )
    } else if error.is_body() || error.is_decode() {
        (
            ErrorCode::ConnectionFailed,
            "the connection broke while the body was read, before it was complete",
        )
    } else {
        (
            ErrorCode::ConnectionFailed,
            "the request to the source failed",
        )
    };
    // The innermost cause is the most specific; the URL is left out because
    // its query may be a signature.
    let error = error.without_url();
    let mut cause: &dyn std::error::Error = &error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    FetchError::new(code, format!("{summary} ({cause})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_their_codes() {
        let cases = [
            (200, None),
            (206, None),
            (404, Some(ErrorCode::NotFound)),
            (410, Some(ErrorCode::NotFound)),
            (401, Some(ErrorCode::AccessDenied)),
            (403, Some(ErrorCode::AccessDenied)),
            (429, Some(ErrorCode::Throttled)),
            (500, Some(ErrorCode::ServerError)),
            (503, Some(ErrorCode::ServerError)),
            (302, Some(ErrorCode::RedirectRejected)),
            (400, Some(ErrorCode::UnexpectedStatus)),
            (418, Some(ErrorCode::UnexpectedStatus)),
        ];
        for (status, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                classify_status(status).map(|e| e.code),
                expected,
                "{status}"
            );
        }
    }
}
