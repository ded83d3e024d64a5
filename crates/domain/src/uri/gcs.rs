//! The `gs://bucket/object` form and the Google Cloud Storage naming rules.

use super::{
    AttachmentRef, UriError, count_of, first_disallowed_char, looks_like_ipv4,
    split_bucket_and_name, starts_and_ends_alphanumeric,
};

/// Maximum length of a GCS object name in bytes (UTF-8).
const MAX_OBJECT_BYTES: usize = 1024;

/// Object names under this prefix are reserved by GCS.
const ACME_CHALLENGE_PREFIX: &str = ".well-known/acme-challenge/";

/// An example of the `gs://` form, for messages.
const GS_EXAMPLE: &str = "gs://bucket/path/to/file";

/// Parses the text after `gs://`. The object name is every byte after the
/// first `/`.
pub(super) fn parse_gs_uri(rest: &str) -> Result<AttachmentRef, UriError> {
    let (bucket, object) = split_bucket_and_name(rest);
    if bucket.contains('@') {
        return Err(UriError::credentials());
    }
    if bucket.is_empty() {
        return Err(UriError::invalid(format!(
            "the GCS bucket name is missing: write {GS_EXAMPLE}"
        )));
    }
    check_bucket(bucket)?;
    check_object(object)?;

    Ok(AttachmentRef::Gcs {
        bucket: bucket.to_owned(),
        object: object.to_owned(),
    })
}

/// Checks the GCS bucket naming rules. A name contains lowercase letters,
/// digits, `-`, `_` and `.`, with a letter or digit at both ends. It has 3 to
/// 63 characters, or up to 222 when dotted with each dot-separated part at most
/// 63. It is not an IPv4 address, does not start with `goog` and does not
/// contain `google`.
fn check_bucket(bucket: &str) -> Result<(), UriError> {
    let fix = "copy the exact bucket name from the Google Cloud console";

    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.');
    if let Some(c) = first_disallowed_char(bucket, allowed) {
        return Err(UriError::invalid(format!(
            "the GCS bucket name contains `{c}`, but GCS bucket names contain only \
             lowercase letters, digits, `-`, `_` and `.`: {fix}"
        )));
    }
    check_bucket_length(bucket, fix)?;
    if !starts_and_ends_alphanumeric(bucket) {
        return Err(UriError::invalid(format!(
            "the GCS bucket name does not start and end with a letter or digit, \
             as GCS bucket names do: {fix}"
        )));
    }
    if looks_like_ipv4(bucket) {
        return Err(UriError::invalid(format!(
            "the GCS bucket name is formatted as an IP address, which GCS does not allow: {fix}"
        )));
    }
    if bucket.starts_with("goog") || bucket.contains("google") {
        return Err(UriError::invalid(format!(
            "the GCS bucket name starts with `goog` or contains `google`, \
             which GCS does not allow: {fix}"
        )));
    }
    Ok(())
}

fn check_bucket_length(bucket: &str, fix: &str) -> Result<(), UriError> {
    if !bucket.contains('.') {
        if !(3..=63).contains(&bucket.len()) {
            return Err(UriError::invalid(format!(
                "the GCS bucket name has {}, but GCS bucket names without dots \
                 have 3 to 63: {fix}",
                count_of(bucket.len(), "character")
            )));
        }
        return Ok(());
    }

    if !(3..=222).contains(&bucket.len()) {
        return Err(UriError::invalid(format!(
            "the GCS bucket name has {}, but dotted GCS bucket names have \
             3 to 222: {fix}",
            count_of(bucket.len(), "character")
        )));
    }
    // A dotted name is a domain name, so an empty part (two adjacent dots) is
    // as invalid as a part over 63 characters.
    if bucket
        .split('.')
        .any(|part| part.is_empty() || part.len() > 63)
    {
        return Err(UriError::invalid(format!(
            "a dot-separated part of the GCS bucket name is empty or longer than \
             63 characters: {fix}"
        )));
    }
    Ok(())
}

/// Checks the GCS object naming rules. Carriage returns and line feeds never
/// reach here because every control character is rejected first.
fn check_object(object: &str) -> Result<(), UriError> {
    if object.is_empty() {
        return Err(UriError::invalid(format!(
            "the GCS object name is empty: name an object after the bucket, as in {GS_EXAMPLE}"
        )));
    }
    if object.ends_with('/') {
        return Err(UriError::invalid(format!(
            "the GCS object name ends with `/`, so it names a folder, not an object: \
             name a file, as in {GS_EXAMPLE}"
        )));
    }
    if object.len() > MAX_OBJECT_BYTES {
        return Err(UriError::invalid(format!(
            "the GCS object name is {} bytes long, over the GCS maximum of \
             {MAX_OBJECT_BYTES}: check that the URI names the right object",
            object.len()
        )));
    }
    if object == "." || object == ".." {
        return Err(UriError::invalid(format!(
            "the GCS object name is `{object}`, which GCS does not allow: \
             name a file, as in {GS_EXAMPLE}"
        )));
    }
    if object.starts_with(ACME_CHALLENGE_PREFIX) {
        return Err(UriError::invalid(format!(
            "the GCS object name starts with `{ACME_CHALLENGE_PREFIX}`, a prefix GCS \
             reserves: name an object outside it"
        )));
    }
    Ok(())
}
