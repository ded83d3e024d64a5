//! The `s3://bucket/key` form and the S3 bucket and key rules, which the
//! https forms in `s3_url` share.

use super::{
    AttachmentRef, UriError, count_of, first_disallowed_char, looks_like_ipv4,
    split_bucket_and_name, starts_and_ends_alphanumeric,
};

/// Maximum length of an S3 object key in bytes (UTF-8).
const MAX_KEY_BYTES: usize = 1024;

/// An example of the `s3://` form, for messages.
const S3_EXAMPLE: &str = "s3://bucket/path/to/file";

/// Parses the text after `s3://`. The key is every byte after the first `/`.
pub(super) fn parse_s3_uri(rest: &str) -> Result<AttachmentRef, UriError> {
    let (bucket, key) = split_bucket_and_name(rest);
    if bucket.contains('@') {
        return Err(UriError::credentials());
    }
    if bucket.is_empty() {
        return Err(UriError::invalid(format!(
            "the S3 bucket name is missing: write {S3_EXAMPLE}"
        )));
    }
    check_bucket(bucket)?;
    check_key(key, S3_EXAMPLE)?;

    Ok(AttachmentRef::S3 {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        region: None,
    })
}

/// Checks the S3 naming rules for general purpose buckets. A name has 3 to 63
/// lowercase letters, digits, dots and hyphens, with a letter or digit at both
/// ends. It contains no two adjacent dots and is not formatted as an IPv4
/// address.
pub(super) fn check_bucket(bucket: &str) -> Result<(), UriError> {
    let fix = "copy the exact bucket name from the S3 console";

    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-');
    if let Some(c) = first_disallowed_char(bucket, allowed) {
        return Err(UriError::invalid(format!(
            "the S3 bucket name contains `{c}`, but S3 bucket names contain only \
             lowercase letters, digits, dots and hyphens: {fix}"
        )));
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(UriError::invalid(format!(
            "the S3 bucket name has {}, but S3 bucket names have 3 to 63: {fix}",
            count_of(bucket.len(), "character")
        )));
    }
    if !starts_and_ends_alphanumeric(bucket) {
        return Err(UriError::invalid(format!(
            "the S3 bucket name does not start and end with a letter or digit, \
             as S3 bucket names do: {fix}"
        )));
    }
    if bucket.contains("..") {
        return Err(UriError::invalid(format!(
            "the S3 bucket name contains two adjacent dots, which S3 does not allow: {fix}"
        )));
    }
    if looks_like_ipv4(bucket) {
        return Err(UriError::invalid(format!(
            "the S3 bucket name is formatted as an IP address, which S3 does not allow: {fix}"
        )));
    }
    Ok(())
}

/// Checks an S3 object key. `example` shows the form the customer used.
pub(super) fn check_key(key: &str, example: &str) -> Result<(), UriError> {
    if key.is_empty() {
        return Err(UriError::invalid(format!(
            "the S3 object key is empty: name an object after the bucket, as in {example}"
        )));
    }
    if key.ends_with('/') {
        return Err(UriError::invalid(format!(
            "the S3 object key ends with `/`, so it names a folder, not an object: \
             name a file, as in {example}"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(UriError::invalid(format!(
            "the S3 object key is {} bytes long, over the S3 maximum of {MAX_KEY_BYTES}: \
             check that the URI names the right object",
            key.len()
        )));
    }
    Ok(())
}
