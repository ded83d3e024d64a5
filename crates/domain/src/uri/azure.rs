//! Azure Blob Storage URLs, `https://{account}.blob.core.windows.net/{container}/{blob}`,
//! and the Azure naming rules for accounts, containers and blobs.

use url::Url;

use super::https::{check_default_port, decode_path_part, has_query, path_without_slash};
use super::{
    AttachmentRef, UriError, count_of, first_disallowed_char, starts_and_ends_alphanumeric,
};

/// The host suffix of the Blob Storage endpoints in Azure's public cloud.
const BLOB_HOST_SUFFIX: &str = ".blob.core.windows.net";

/// Maximum length of a blob name in characters.
const MAX_BLOB_CHARS: usize = 1024;

/// Maximum number of `/`-separated segments in a blob name.
const MAX_BLOB_SEGMENTS: usize = 254;

/// Containers whose names break the usual rules: the root container and the
/// static website container.
const SPECIAL_CONTAINERS: [&str; 2] = ["$root", "$web"];

/// An example of the Azure form, for messages.
const AZURE_EXAMPLE: &str = "https://account.blob.core.windows.net/container/path/to/file";

/// Returns the storage account when `host` (already lowercased by the URL
/// parser) ends with the Blob Storage suffix.
pub(super) fn account_from_host(host: &str) -> Option<&str> {
    host.strip_suffix(BLOB_HOST_SUFFIX)
}

/// Parses a URL whose host is a Blob Storage endpoint.
pub(super) fn parse_azure_url(url: &Url, account: &str) -> Result<AttachmentRef, UriError> {
    if url.scheme() != "https" {
        return Err(UriError::invalid(
            "the Azure Blob URL uses http: use https, as in \
             https://account.blob.core.windows.net/container/path/to/file",
        ));
    }
    check_default_port(url, "Azure Blob Storage")?;
    if has_query(url) {
        return Err(UriError::invalid(
            "the Azure Blob URL has a query, such as a SAS token, which Attaché does not \
             accept: remove the query, and link Azure as an integration or make the \
             container public",
        ));
    }
    check_account(account)?;

    let path = path_without_slash(url);
    let (raw_container, raw_blob) = path.split_once('/').unwrap_or((path, ""));
    let container = decode_path_part(raw_container, "Azure container name")?;
    check_container(&container)?;
    let blob = decode_path_part(raw_blob, "Azure blob name")?;
    check_blob(&blob)?;

    Ok(AttachmentRef::AzureBlob {
        account: account.to_owned(),
        container,
        blob,
    })
}

/// Checks the storage account rules: 3 to 24 lowercase letters and digits.
fn check_account(account: &str) -> Result<(), UriError> {
    let valid_chars = account
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid_chars || !(3..=24).contains(&account.len()) {
        return Err(UriError::invalid(
            "the Azure storage account name in the host is invalid: it must have 3 to 24 \
             lowercase letters and digits, as in https://account.blob.core.windows.net/...",
        ));
    }
    Ok(())
}

/// Checks the container rules. A name is one of the special containers, or
/// has 3 to 63 lowercase letters, digits and hyphens, with a letter or digit
/// at both ends and no two adjacent hyphens.
fn check_container(container: &str) -> Result<(), UriError> {
    if container.is_empty() {
        return Err(UriError::invalid(format!(
            "the Azure container name is missing: write {AZURE_EXAMPLE}"
        )));
    }
    if SPECIAL_CONTAINERS.contains(&container) {
        return Ok(());
    }

    let fix = "copy the exact container name from the Azure portal";
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '-');
    if let Some(c) = first_disallowed_char(container, allowed) {
        return Err(UriError::invalid(format!(
            "the Azure container name contains `{c}`, but container names contain only \
             lowercase letters, digits and hyphens, or are $root or $web: {fix}"
        )));
    }
    if !(3..=63).contains(&container.len()) {
        return Err(UriError::invalid(format!(
            "the Azure container name has {}, but container names have 3 to 63: {fix}",
            count_of(container.len(), "character")
        )));
    }
    if !starts_and_ends_alphanumeric(container) || container.contains("--") {
        return Err(UriError::invalid(format!(
            "the Azure container name starts or ends with a hyphen or has two adjacent \
             hyphens, which Azure does not allow: {fix}"
        )));
    }
    Ok(())
}

/// Checks the decoded blob name: not empty, not a folder, no empty, `.` or
/// `..` segment, no control characters, at most 1024 characters and 254
/// segments.
fn check_blob(blob: &str) -> Result<(), UriError> {
    if blob.is_empty() {
        return Err(UriError::invalid(format!(
            "the Azure blob name is empty: name a blob after the container, as in \
             {AZURE_EXAMPLE}. For a blob in the root container, write /$root/name"
        )));
    }
    if blob.ends_with('/') {
        return Err(UriError::invalid(format!(
            "the Azure blob name ends with `/`, so it names a folder, not a blob: \
             name a file, as in {AZURE_EXAMPLE}"
        )));
    }
    check_blob_segments(blob)?;
    // ASCII control characters were rejected while decoding. Azure also
    // rejects Unicode control characters, such as U+0081.
    if blob.chars().any(char::is_control) {
        return Err(UriError::invalid(
            "the Azure blob name contains a control character, which Azure does not allow: \
             remove it",
        ));
    }
    let chars = blob.chars().count();
    if chars > MAX_BLOB_CHARS {
        return Err(UriError::invalid(format!(
            "the Azure blob name has {chars} characters, over the Azure maximum of \
             {MAX_BLOB_CHARS}: check that the URL names the right blob"
        )));
    }
    let segments = blob.split('/').count();
    if segments > MAX_BLOB_SEGMENTS {
        return Err(UriError::invalid(format!(
            "the Azure blob name has {segments} path segments, over the Azure maximum of \
             {MAX_BLOB_SEGMENTS}: check that the URL names the right blob"
        )));
    }
    Ok(())
}

/// Rejects an empty, `.` or `..` segment in the decoded blob name. The blob
/// name goes into the request URL as path segments, and the URL parser
/// resolves `.` and `..` (also when percent-encoded), so such a name would
/// read another blob, another container or, with a path-style endpoint,
/// another account.
fn check_blob_segments(blob: &str) -> Result<(), UriError> {
    let Some(segment) = blob
        .split('/')
        .find(|segment| matches!(*segment, "" | "." | ".."))
    else {
        return Ok(());
    };
    let named = if segment.is_empty() {
        "an empty path segment (a leading `/` or two adjacent `/`)".to_owned()
    } else {
        format!("the path segment `{segment}`")
    };
    Err(UriError::invalid(format!(
        "the Azure blob name contains {named} after percent-decoding, which Attaché does \
         not accept because the request would read another path: name the blob by its \
         exact path, as in {AZURE_EXAMPLE}"
    )))
}
