//! Attachment URI parsing: turns the text a customer submits into an
//! [`AttachmentRef`] that names one object at one provider.
//!
//! Call [`parse`] (or [`AttachmentRef::parse`]). It performs no I/O and is
//! deterministic, so the producer validates with it and the workers parse the
//! stored text again. Accepted forms:
//!
//! - `s3://bucket/key` and the S3 https endpoints
//!   (`bucket.s3[.region].amazonaws.com/key`, `bucket.s3-region.amazonaws.com/key`
//!   and the path-style `s3[.region].amazonaws.com/bucket/key`);
//! - `gs://bucket/object`;
//! - `https://account.blob.core.windows.net/container/blob`;
//! - any other `http://` or `https://` URL, fetched as is. This includes GCS
//!   https URLs and S3 https URLs that carry a pre-signed signature.
//!
//! # Design notes
//!
//! - `s3://` and `gs://` are split by hand, not with [`url::Url`], because the
//!   key is every byte after the bucket's `/`: no percent-decoding, no `?` or
//!   `#` handling, no slash collapsing and no Unicode normalisation. So
//!   `s3://b//x` names the key `/x`. The https forms are WHATWG URLs, and
//!   their object names are percent-decoded exactly once.
//! - An empty key or a key ending in `/` is rejected: the first names a
//!   bucket, the second a folder, and neither is a file to fetch. A key of
//!   only spaces is accepted because S3 and GCS allow it.
//! - An S3 key may contain `.` and `..` segments, such as `a/../b`, because
//!   S3 stores them as literal names. An Azure blob name may not contain an
//!   empty, `.` or `..` segment after percent-decoding, because the request
//!   URL carries the name as path segments and a URL parser would resolve
//!   them into the path of another blob or container.
//! - An http or https URL needs a host right after `//`. The URL parser
//!   reads `http:///host/x` as host `host`, so a third slash or a backslash
//!   there is rejected before parsing. Port 0 is rejected because no server
//!   listens on it.
//! - NOTE: the input may not start or end with whitespace, so a key that ends
//!   in a space (a spaces-only key included) can be given only
//!   percent-encoded in an S3 https URL. For GCS there is no such form yet.
//! - The fragment of an http or https URL is dropped, because a client never
//!   sends it to the server.
//! - A query is kept on a plain http or https URL. On an S3 URL it is accepted
//!   only as a pre-signed signature (`X-Amz-Signature` or `Signature`), which
//!   makes the URL a plain [`AttachmentRef::Http`] because it grants access by
//!   itself. Any other S3 query (such as `versionId`) and every Azure query
//!   (such as a SAS token) is rejected.
//! - An S3 or Azure host must be reached over https on the default port. The
//!   exception is a pre-signed S3 URL, which is fetched exactly as given.
//! - Credentials in a URI are rejected. Error messages never repeat a query
//!   or userinfo, because either may contain a secret.

mod azure;
mod gcs;
mod https;
mod s3;
mod s3_url;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;

/// Maximum length of an attachment URI in bytes.
pub const MAX_URI_BYTES: usize = 4096;

/// The accepted forms, listed in messages that reject a scheme.
const SUPPORTED_FORMS: &str = "s3://bucket/key, gs://bucket/object, \
    https://account.blob.core.windows.net/container/blob, \
    or another https:// or http:// URL";

/// The storage service an attachment is fetched from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Amazon S3.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    AzureBlob,
    /// A plain http or https URL.
    Http,
}

impl Provider {
    /// Returns the provider's name as stored and published.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Gcs => "gcs",
            Self::AzureBlob => "azure_blob",
            Self::Http => "http",
        }
    }

    /// Returns the provider's name for messages, with its indefinite
    /// article, as in "the URI is an S3 URI".
    pub fn name_with_article(self) -> &'static str {
        match self {
            Self::S3 => "an S3",
            Self::Gcs => "a GCS",
            Self::AzureBlob => "an Azure Blob Storage",
            Self::Http => "an http or https",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object at one provider, as named by a validated attachment URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachmentRef {
    /// An S3 object. The key is byte for byte from `s3://`, or percent-decoded
    /// once from an https URL. `region` is set only when an https host names it.
    S3 {
        bucket: String,
        key: String,
        region: Option<String>,
    },
    /// A Google Cloud Storage object, named byte for byte from `gs://`.
    Gcs { bucket: String, object: String },
    /// An Azure Blob Storage blob, with its name percent-decoded.
    AzureBlob {
        account: String,
        container: String,
        blob: String,
    },
    /// A URL fetched with a plain GET, without its fragment.
    Http { url: url::Url },
}

impl AttachmentRef {
    /// Parses an attachment URI. Same as [`parse`].
    pub fn parse(input: &str) -> Result<Self, UriError> {
        parse(input)
    }

    /// Returns the provider that stores the object.
    pub fn provider(&self) -> Provider {
        match self {
            Self::S3 { .. } => Provider::S3,
            Self::Gcs { .. } => Provider::Gcs,
            Self::AzureBlob { .. } => Provider::AzureBlob,
            Self::Http { .. } => Provider::Http,
        }
    }
}

/// A rejected attachment URI. The message is shown to API users as is. It
/// states what is wrong and how to fix it, and never repeats a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UriError {
    code: ErrorCode,
    message: String,
}

impl UriError {
    /// Returns [`ErrorCode::InvalidUri`] or [`ErrorCode::UnsupportedScheme`].
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Returns the message for API users.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidUri,
            message: message.into(),
        }
    }

    fn unsupported_scheme(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::UnsupportedScheme,
            message: message.into(),
        }
    }

    fn credentials() -> Self {
        Self::invalid(
            "the URI contains credentials before `@`, and credentials do not belong in \
             URIs: remove them, and link the storage account as an integration or send \
             a pre-signed URL",
        )
    }
}

/// Parses an attachment URI into the object it names.
///
/// Returns [`ErrorCode::UnsupportedScheme`] for a scheme other than `s3`,
/// `gs`, `http` and `https`, and [`ErrorCode::InvalidUri`] for every other
/// rejection. Never panics.
pub fn parse(input: &str) -> Result<AttachmentRef, UriError> {
    check_text(input)?;

    let (scheme, after_colon) = split_scheme(input)?;
    let scheme = scheme.to_ascii_lowercase();
    let after_slashes = match scheme.as_str() {
        "s3" | "gs" | "http" | "https" => after_colon.strip_prefix("//"),
        _ => return Err(unsupported_scheme_error(&scheme)),
    };
    let Some(rest) = after_slashes else {
        return Err(UriError::invalid(format!(
            "the URI has no `//` after `{scheme}:`: write it as {scheme}://{}",
            example_after_slashes(&scheme)
        )));
    };

    match scheme.as_str() {
        "s3" => s3::parse_s3_uri(rest),
        "gs" => gcs::parse_gs_uri(rest),
        _ => https::parse_http_url(input, &scheme, rest),
    }
}

/// Checks the rules that hold for every form: length, surrounding whitespace
/// and control characters.
fn check_text(input: &str) -> Result<(), UriError> {
    if input.is_empty() {
        return Err(UriError::invalid(
            "the URI is empty: give the attachment's location, as in s3://bucket/path/to/file",
        ));
    }
    if input.len() > MAX_URI_BYTES {
        return Err(UriError::invalid(format!(
            "the URI is {} bytes long, over the maximum of {MAX_URI_BYTES}: \
             send a shorter URI for the attachment",
            input.len()
        )));
    }
    let trimmed = input.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.len() != input.len() {
        return Err(UriError::invalid(
            "the URI starts or ends with whitespace: remove it",
        ));
    }
    if let Some(index) = input.bytes().position(|b| b.is_ascii_control()) {
        return Err(UriError::invalid(format!(
            "the URI contains a control character at byte {index}: remove it"
        )));
    }
    Ok(())
}

/// Splits the input at the first `:` into the scheme (RFC 3986 syntax:
/// a letter, then letters, digits, `+`, `-` or `.`) and the rest.
fn split_scheme(input: &str) -> Result<(&str, &str), UriError> {
    let no_scheme = || {
        UriError::invalid(format!(
            "the URI has no scheme: write it as {SUPPORTED_FORMS}"
        ))
    };
    let (scheme, rest) = input.split_once(':').ok_or_else(no_scheme)?;

    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_is_valid = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !starts_with_letter || !rest_is_valid {
        return Err(no_scheme());
    }
    Ok((scheme, rest))
}

fn unsupported_scheme_error(scheme: &str) -> UriError {
    // A scheme contains only ASCII letters, digits, `+`, `-` and `.`, so it
    // cannot carry a secret, but a long one is not worth repeating.
    const MAX_ECHOED_SCHEME: usize = 32;
    let named = if scheme.len() <= MAX_ECHOED_SCHEME {
        format!("`{scheme}`")
    } else {
        "of this URI".to_owned()
    };
    UriError::unsupported_scheme(format!(
        "the scheme {named} is not supported: use {SUPPORTED_FORMS}"
    ))
}

fn example_after_slashes(scheme: &str) -> &'static str {
    match scheme {
        "s3" | "gs" => "bucket/path/to/file",
        _ => "host/path/to/file",
    }
}

/// Splits the text after `s3://` or `gs://` at the first `/` into the bucket
/// and the object name. The object name keeps every byte, and is empty when
/// there is no `/`.
fn split_bucket_and_name(rest: &str) -> (&str, &str) {
    rest.split_once('/').unwrap_or((rest, ""))
}

/// Tells whether `name` has the form of an IPv4 address in dotted-decimal
/// notation, such as `192.168.5.4`.
fn looks_like_ipv4(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Returns `count` followed by `noun`, in the plural unless `count` is 1,
/// as in "1 character" or "2 characters".
fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Returns the first character of `name` that `allowed` rejects, escaped so
/// that an invisible character shows in a message.
fn first_disallowed_char(name: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    name.chars()
        .find(|&c| !allowed(c))
        .map(|c| c.escape_debug().to_string())
}

/// Tells whether the first and last characters are ASCII letters or digits.
fn starts_and_ends_alphanumeric(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric(),
        _ => false,
    }
}
