//! Blob reads with the Blob Storage REST API, through the egress pool.
//!
//! The `azure_storage_blob` crate is not used. It sends through
//! `azure_core`'s pipeline with its own retry policy and partitioned
//! downloads, so its requests would need an adapter to leave through the
//! egress pool and its destination guard. A read here is one
//! `GET {endpoint}/{container}/{blob}` with `x-ms-version` and, for a
//! linked team, a bearer token. The fetch-worker's retry schedule handles
//! retries, and the body is streamed, never buffered.

use attache_domain::ErrorCode;
use attache_egress::Sent;
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderValue};
use url::Url;

use crate::consent::READER_ROLE;
use crate::token::{AccessToken, Azure, MAX_ERROR_BODY, read_text};

/// The Blob Storage REST API version sent in `x-ms-version`; bearer tokens
/// need 2017-11-09 or later.
pub const API_VERSION: &str = "2023-11-03";

/// Characters left as they are in a path segment: RFC 3986's unreserved
/// characters, and `$` for the `$root` and `$web` containers. Everything
/// else, `%`, `#`, `?`, spaces and non-ASCII included, is percent-encoded
/// once.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$');

/// Builds the URL of a blob from the endpoint template (`{account}` stands
/// for the account). The blob name, decoded once when the attachment URL
/// was parsed, is encoded once per `/`-separated segment, so its virtual
/// directories stay directories.
///
/// Returns an error for a `.` or `..` segment in the container or blob
/// name, and for a template that does not keep the built path, because the
/// request would then read another path than the one named.
pub fn blob_url(template: &str, account: &str, container: &str, blob: &str) -> Result<Url, String> {
    // The URL parser resolves `.` and `..` segments, and also their
    // percent-encoded forms such as `%2E%2E`, so no encoding keeps them.
    let mut segments = std::iter::once(container).chain(blob.split('/'));
    if let Some(segment) = segments.find(|segment| matches!(*segment, "." | "..")) {
        return Err(format!(
            "the Azure container or blob name contains the path segment `{segment}`, \
             which the request URL cannot carry without reading another path: \
             name the blob by its exact path, without `.` or `..` segments"
        ));
    }

    let base = template.replace("{account}", account);
    let base = base.trim_end_matches('/');
    let container = utf8_percent_encode(container, SEGMENT);
    let blob: Vec<String> = blob
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    let path = format!("/{container}/{}", blob.join("/"));
    let url = Url::parse(&format!("{base}{path}")).map_err(|error| {
        format!("ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE does not make a valid URL ({error})")
    })?;

    // The request must read exactly the path built here. A template with a
    // query or fragment, for one, would swallow it.
    if !url.path().ends_with(&path) {
        return Err(
            "the Blob Storage URL built from ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE does not \
             end with the container and blob path: set the template to a base URL without \
             a query or fragment, such as https://{account}.blob.core.windows.net"
                .to_owned(),
        );
    }
    Ok(url)
}

/// The identity a read runs as, which messages name.
#[derive(Clone, Copy, Debug)]
pub enum Reader<'a> {
    /// Our service principal in the team's tenant.
    Tenant { tenant: &'a str, client_id: &'a str },
    /// No credentials: public containers only.
    Anonymous,
}

impl Azure {
    /// Sends the GET of a blob through the egress pool, with `token` when
    /// there is one. Redirects to another host are followed without it.
    pub async fn get_blob(
        &self,
        token: Option<&AccessToken>,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Sent, String> {
        let url = blob_url(
            &self.args.azure_blob_endpoint_template,
            account,
            container,
            blob,
        )?;
        let mut headers = token.map(AccessToken::authorization).unwrap_or_default();
        headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        Ok(self.egress.get_with_headers(url, headers).await)
    }
}

/// The storage error of a failed response: its `x-ms-error-code` and the
/// first line of the XML body's `<Message>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageError {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, "{code}: {message}"),
            (Some(text), None) | (None, Some(text)) => f.write_str(text),
            (None, None) => f.write_str("no error details"),
        }
    }
}

/// Maps a failed Blob Storage status to an error code and a message that
/// names the change to make.
///
/// Azurite 3.37 rejects an anonymous read of a private container with 403
/// `AuthorizationFailure`, and both that and 404 `ResourceNotFound` map to
/// `azure_not_linked`. A missing blob in a public container is 404
/// `BlobNotFound`, which maps to `not_found`.
// NOTE: the 404 `ResourceNotFound` case assumes that Blob Storage hides a
// private container from anonymous callers that way; it was not checked
// against Azure itself.
pub fn classify_status(
    status: u16,
    reader: Reader<'_>,
    account: &str,
    container: &str,
    error: &StorageError,
) -> (ErrorCode, String) {
    let place = format!("container {container} of storage account {account}");
    let hidden = error.code.as_deref() == Some("ResourceNotFound");
    let anonymous = matches!(reader, Reader::Anonymous);
    if anonymous && (matches!(status, 401 | 403 | 409) || (status == 404 && hidden)) {
        return (
            ErrorCode::AzureNotLinked,
            format!(
                "{place} cannot be read anonymously, because the container is not public or does not exist (HTTP {status}: {error}): link Azure with POST /v1/integrations/azure/connect, then assign Attaché's application the role {READER_ROLE} on the container"
            ),
        );
    }
    match (status, reader) {
        (404, _) => (
            ErrorCode::NotFound,
            format!(
                "Blob Storage found no such blob in {place} (HTTP 404: {error}): check the container and blob name"
            ),
        ),
        (401 | 403, Reader::Tenant { tenant, client_id }) => (
            ErrorCode::AccessDenied,
            format!(
                "Blob Storage denied Attaché's application ({client_id}) in tenant {tenant} access to {place} (HTTP {status}: {error}): assign it the role {READER_ROLE} on the storage account or container"
            ),
        ),
        (429, _) => (
            ErrorCode::Throttled,
            format!("Blob Storage is limiting the request rate (HTTP 429: {error})"),
        ),
        (500..=599, _) => (
            ErrorCode::ServerError,
            format!("Blob Storage failed (HTTP {status}: {error})"),
        ),
        _ => (
            ErrorCode::UnexpectedStatus,
            format!("Blob Storage answered HTTP {status} ({error})"),
        ),
    }
}

/// Reads the storage error of a failed response.
pub async fn error_detail(response: reqwest::Response) -> StorageError {
    let code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = read_text(response, MAX_ERROR_BODY).await;
    let message = body
        .split_once("<Message>")
        .and_then(|(_, rest)| rest.split_once("</Message>"))
        .map(|(message, _)| message.lines().next().unwrap_or_default().trim().to_owned());
    StorageError { code, message }
}

/// Returns the `Content-MD5` of a response, present when the blob was
/// stored with one. A ranged read would carry the range's MD5 only if
/// asked, and this GET reads the whole blob.
pub fn expected_md5(headers: &HeaderMap) -> Option<[u8; 16]> {
    let value = headers.get("content-md5")?.to_str().ok()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    <[u8; 16]>::try_from(bytes).ok()
}

/// The MD5 of a byte stream, compared with the blob's `Content-MD5`.
#[derive(Default)]
pub struct Md5(md5::Md5);

impl Md5 {
    pub fn update(&mut self, bytes: &[u8]) {
        md5::Digest::update(&mut self.0, bytes);
    }

    pub fn value(&self) -> [u8; 16] {
        let digest = md5::Digest::finalize(self.0.clone());
        let mut value = [0u8; 16];
        value.copy_from_slice(digest.as_slice());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "https://{account}.blob.core.windows.net";

    #[test]
    fn blob_names_are_encoded_once_per_segment() {
        let cases = [
            ("a b.txt", "a%20b.txt"),
            ("dir/file", "dir/file"),
            ("a#b?c", "a%23b%3Fc"),
            ("100%", "100%25"),
            ("a%2Fb", "a%252Fb"),
            ("é", "%C3%A9"),
            ("a+b~c", "a%2Bb~c"),
        ];
        for (blob, encoded) in cases {
            let url = blob_url(TEMPLATE, "acct", "container", blob).unwrap();
            assert_eq!(
                url.as_str(),
                format!("https://acct.blob.core.windows.net/container/{encoded}"),
                "{blob}"
            );
        }
    }

    #[test]
    fn blob_url_rejects_dot_segments() {
        let names = [
            ("container", "a/../../../victim/private/secret.txt"),
            ("container", ".."),
            ("container", "."),
            ("container", "a/./b"),
            ("container", "a/.."),
            ("..", "victim/secret.txt"),
            (".", "f"),
        ];
        for (container, blob) in names {
            let error = blob_url(TEMPLATE, "acct", container, blob).unwrap_err();
            assert!(
                error.contains("path segment"),
                "{container}/{blob}: {error}"
            );
        }
    }

    #[test]
    fn blob_url_keeps_names_with_dots() {
        let cases = [
            ("...", "..."),
            ("a..b", "a..b"),
            (".hidden/.x", ".hidden/.x"),
            ("a/%2E%2E/b", "a/%252E%252E/b"),
            ("a//b", "a//b"),
        ];
        for (blob, encoded) in cases {
            let url = blob_url(TEMPLATE, "acct", "container", blob).unwrap();
            assert_eq!(url.path(), format!("/container/{encoded}"), "{blob}");
        }
    }

    #[test]
    fn blob_url_rejects_templates_that_drop_the_path() {
        for template in [
            "https://{account}.blob.core.windows.net/?x=",
            "https://{account}.blob.core.windows.net/#",
        ] {
            let error = blob_url(template, "acct", "container", "f").unwrap_err();
            assert!(
                error.contains("does not end with the container and blob path"),
                "{template}: {error}"
            );
        }
    }

    #[test]
    fn blob_url_supports_path_style_templates() {
        let url = blob_url("http://127.0.0.1:10000/{account}/", "dev", "$root", "f").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:10000/dev/$root/f");
        assert!(blob_url("not a url {account}", "dev", "c", "f").is_err());
    }

    fn error(code: &str) -> StorageError {
        StorageError {
            code: Some(code.to_owned()),
            message: Some("text".to_owned()),
        }
    }

    #[test]
    fn statuses_map_to_codes_that_name_the_fix() {
        let tenant = Reader::Tenant {
            tenant: "contoso.onmicrosoft.com",
            client_id: "app-id",
        };
        let anonymous = Reader::Anonymous;
        let none = StorageError::default();

        let (code, message) = classify_status(
            403,
            tenant,
            "acct",
            "c",
            &error("AuthorizationPermissionMismatch"),
        );
        assert_eq!(code, ErrorCode::AccessDenied);
        assert!(message.contains(READER_ROLE), "{message}");
        assert!(message.contains("app-id"), "{message}");
        let (code, message) =
            classify_status(403, anonymous, "acct", "c", &error("AuthorizationFailure"));
        assert_eq!(code, ErrorCode::AzureNotLinked);
        assert!(message.contains("container is not public"), "{message}");

        let hidden = classify_status(404, anonymous, "a", "c", &error("ResourceNotFound"));
        assert_eq!(hidden.0, ErrorCode::AzureNotLinked);
        let missing = classify_status(404, anonymous, "a", "c", &error("BlobNotFound"));
        assert_eq!(missing.0, ErrorCode::NotFound);
        assert_eq!(
            classify_status(404, tenant, "a", "c", &error("ResourceNotFound")).0,
            ErrorCode::NotFound
        );

        assert_eq!(
            classify_status(429, tenant, "a", "c", &none).0,
            ErrorCode::Throttled
        );
        assert_eq!(
            classify_status(503, anonymous, "a", "c", &none).0,
            ErrorCode::ServerError
        );
        assert_eq!(
            classify_status(400, tenant, "a", "c", &none).0,
            ErrorCode::UnexpectedStatus
        );
    }

    #[test]
    fn storage_errors_show_code_and_message() {
        assert_eq!(error("BlobNotFound").to_string(), "BlobNotFound: text");
        assert_eq!(StorageError::default().to_string(), "no error details");
    }

    #[test]
    fn content_md5_is_read_when_present() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_md5(&headers), None);
        // MD5 of the empty string.
        headers.insert("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap());
        assert_eq!(
            expected_md5(&headers).map(hex::encode).as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        let mut md5 = Md5::default();
        md5.update(b"");
        assert_eq!(Some(md5.value()), expected_md5(&headers));
        headers.insert("content-md5", "short".parse().unwrap());
        assert_eq!(expected_md5(&headers), None);
    }
}
