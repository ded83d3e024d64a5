//! Object reads with the Cloud Storage JSON API, through the egress pool.
//!
//! The official `google-cloud-storage` crate is not used: it sends through
//! its own HTTP client, so its requests would bypass the egress pool and
//! its destination guard, and its default retry policy retries a 503 for
//! minutes. A read is one `GET {endpoint}/storage/v1/b/{bucket}/o/{object}
//! ?alt=media` with a bearer token; the fetch-worker's retry schedule
//! handles retries.

use attache_domain::ErrorCode;
use attache_egress::Sent;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use url::Url;

use crate::token::{AccessToken, Gcp};

/// Characters left as they are in a path segment: RFC 3986's unreserved
/// characters. Everything else, `/`, `#`, `?`, `%`, spaces and non-ASCII
/// included, is percent-encoded once, because an object name is opaque.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Builds the JSON API media URL of an object. The object name must not be
/// `.` or `..`, which the URI parser rejects: the URL parser would collapse
/// such a segment and read the bucket instead.
pub fn object_url(endpoint: &Url, bucket: &str, object: &str) -> Url {
    debug_assert!(
        !matches!(object, "." | ".."),
        "gs:// parsing rejects the object names . and .."
    );
    let base = endpoint.as_str().trim_end_matches('/');
    let bucket = utf8_percent_encode(bucket, SEGMENT);
    let object = utf8_percent_encode(object, SEGMENT);
    Url::parse(&format!(
        "{base}/storage/v1/b/{bucket}/o/{object}?alt=media"
    ))
    .expect("a valid base URL with encoded path segments is a valid URL")
}

/// The CRC32C (Castagnoli) checksum of a byte stream, as Cloud Storage
/// computes it.
pub struct Crc32c(crc_fast::Digest);

impl Default for Crc32c {
    fn default() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }
}

impl Crc32c {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn value(&self) -> u32 {
        // A CRC-32 digest fits in 32 bits.
        self.0.finalize() as u32
    }
}

/// Returns the CRC32C that Cloud Storage sent in `x-goog-hash`
/// (`crc32c=<base64 of 4 big-endian bytes>`), or `None` when there is none
/// or the body is not the stored object. Cloud Storage decompresses an
/// object stored gzip-compressed for a client that does not accept gzip,
/// and marks the response with `Warning: 214 UncompressedContent`. The
/// checksum then describes the compressed bytes, so it is not checked.
pub fn expected_crc32c(headers: &reqwest::header::HeaderMap) -> Option<u32> {
    use base64::Engine;

    let transformed = headers
        .get_all(reqwest::header::WARNING)
        .iter()
        .any(|value| value.to_str().is_ok_and(|text| text.starts_with("214")));
    if transformed {
        return None;
    }
    headers
        .get_all("x-goog-hash")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|part| part.trim().strip_prefix("crc32c="))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        })
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_be_bytes)
}

/// The identity a read runs as, which messages name as the account to grant a role.
#[derive(Clone, Copy, Debug)]
pub enum Reader<'a> {
    /// Our own service account (cross-project).
    Own(&'a str),
    /// The team's service account, impersonated.
    Impersonated(&'a str),
}

impl Reader<'_> {
    fn email(&self) -> &str {
        match self {
            Self::Own(email) | Self::Impersonated(email) => email,
        }
    }
}

impl Gcp {
    /// Sends the GET of `bucket`/`object` with `token` through the egress
    /// pool. Redirects to another host are followed without the token.
    pub async fn get_object(&self, token: &AccessToken, bucket: &str, object: &str) -> Sent {
        let url = object_url(&self.args.gcp_storage_endpoint, bucket, object);
        self.egress
            .get_with_headers(url, token.authorization())
            .await
    }
}

/// Maps a failed Cloud Storage status to an error code and a message that
/// names the change to make. `detail` is Google's error message.
pub fn classify_status(
    status: u16,
    reader: Reader<'_>,
    bucket: &str,
    detail: &str,
) -> (ErrorCode, String) {
    let email = reader.email();
    match status {
        404 => (
            ErrorCode::NotFound,
            format!(
                "Cloud Storage has no such object in bucket {bucket} (HTTP 404: {detail}): check the bucket and object name"
            ),
        ),
        401 | 403 => (
            ErrorCode::AccessDenied,
            format!(
                "Cloud Storage denied {email} access to bucket {bucket} (HTTP {status}: {detail}): grant {email} the role Storage Object Viewer (roles/storage.objectViewer) on the bucket"
            ),
        ),
        429 => (
            ErrorCode::Throttled,
            format!("Cloud Storage is limiting the request rate (HTTP 429: {detail})"),
        ),
        500..=599 => (
            ErrorCode::ServerError,
            format!("Cloud Storage failed (HTTP {status}: {detail})"),
        ),
        _ => (
            ErrorCode::UnexpectedStatus,
            format!("Cloud Storage answered HTTP {status} ({detail})"),
        ),
    }
}

/// Reads Google's error message from a failed response.
pub async fn error_detail(response: reqwest::Response) -> String {
    let text = crate::token::read_text(response, crate::token::MAX_ERROR_BODY).await;
    crate::token::google_error_message(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_encoded_once_as_one_segment() {
        let endpoint = Url::parse("http://127.0.0.1:9023/").unwrap();
        let cases = [
            ("a b.txt", "a%20b.txt"),
            ("dir/file", "dir%2Ffile"),
            ("a#b?c", "a%23b%3Fc"),
            ("100%", "100%25"),
            ("é", "%C3%A9"),
            ("a+b~c", "a%2Bb~c"),
        ];
        for (object, encoded) in cases {
            let url = object_url(&endpoint, "bucket", object);
            assert_eq!(
                url.as_str(),
                format!("http://127.0.0.1:9023/storage/v1/b/bucket/o/{encoded}?alt=media"),
                "{object}"
            );
        }
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The check value of CRC-32C (RFC 3720) for "123456789".
        let mut crc = Crc32c::default();
        crc.update(b"1234");
        crc.update(b"56789");
        assert_eq!(crc.value(), 0xe306_9283);
    }

    #[test]
    fn crc32c_is_read_from_x_goog_hash() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append("x-goog-hash", "crc32c=4waSgw==".parse().unwrap());
        headers.append(
            "x-goog-hash",
            "md5=JdVa0Nu0DzTX5Y5DPAfc6Q==".parse().unwrap(),
        );
        assert_eq!(expected_crc32c(&headers), Some(0xe306_9283));
        let mut combined = reqwest::header::HeaderMap::new();
        combined.insert("x-goog-hash", "md5=abc=, crc32c=4waSgw==".parse().unwrap());
        assert_eq!(expected_crc32c(&combined), Some(0xe306_9283));
        headers.insert(
            reqwest::header::WARNING,
            "214 UncompressedContent".parse().unwrap(),
        );
        assert_eq!(expected_crc32c(&headers), None);
        assert_eq!(expected_crc32c(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn statuses_map_to_codes_that_name_the_reader() {
        let reader = Reader::Impersonated("attache-x@p.iam.gserviceaccount.com");
        let (code, message) = classify_status(403, reader, "b", "denied");
        assert_eq!(code, ErrorCode::AccessDenied);
        assert!(message.contains("attache-x@p.iam.gserviceaccount.com"));
        assert!(message.contains("roles/storage.objectViewer"));
        assert_eq!(classify_status(404, reader, "b", "").0, ErrorCode::NotFound);
        assert_eq!(
            classify_status(401, reader, "b", "").0,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            classify_status(429, reader, "b", "").0,
            ErrorCode::Throttled
        );
        assert_eq!(
            classify_status(503, reader, "b", "").0,
            ErrorCode::ServerError
        );
        assert_eq!(
            classify_status(400, reader, "b", "").0,
            ErrorCode::UnexpectedStatus
        );
    }
}
