//! S3 https URLs. The host must end exactly in `.amazonaws.com` and have one
//! of these forms, so look-alike hosts such as
//! `bucket.s3.amazonaws.com.example.org` or `evil-s3.amazonaws.com` stay
//! plain URLs:
//!
//! - virtual-hosted: `{bucket}.s3.amazonaws.com`, `{bucket}.s3.{region}.amazonaws.com`
//!   and `{bucket}.s3-{region}.amazonaws.com`, where the bucket may contain dots;
//! - path-style: `s3.amazonaws.com`, `s3.{region}.amazonaws.com` and
//!   `s3-{region}.amazonaws.com`, with the bucket as the first path segment.
//!
//! Other S3 endpoints, such as transfer acceleration, dual-stack, website and
//! the `.amazonaws.com.cn` hosts, are fetched as plain URLs.
//!
//! NOTE: the URL parser resolves `.` and `..` path segments, so a key that
//! contains such segments must be given in the `s3://` form.

use url::Url;

use super::https::{check_default_port, decode_path_part, has_query, path_without_slash};
use super::s3::{check_bucket, check_key};
use super::{AttachmentRef, UriError};

/// Query parameters that carry a pre-signed request's signature: Signature
/// Version 4 and Signature Version 2.
const SIGNATURE_PARAMETERS: [&str; 2] = ["X-Amz-Signature", "Signature"];

const VIRTUAL_HOSTED_EXAMPLE: &str = "https://bucket.s3.region.amazonaws.com/path/to/file";
const PATH_STYLE_EXAMPLE: &str = "https://s3.region.amazonaws.com/bucket/path/to/file";

/// An S3 endpoint recognised from a host name.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct S3Endpoint<'a> {
    /// The bucket of a virtual-hosted endpoint, or `None` for path-style,
    /// where the bucket is the first path segment.
    bucket: Option<&'a str>,
    /// The region the host names, if any.
    region: Option<&'a str>,
}

/// Matches `host`, already lowercased by the URL parser, against the S3
/// endpoint forms. Returns `None` for every other host.
pub(super) fn match_endpoint(host: &str) -> Option<S3Endpoint<'_>> {
    let name = host.strip_suffix(".amazonaws.com")?;
    if let Some(region) = match_service_label(name) {
        return Some(S3Endpoint {
            bucket: None,
            region,
        });
    }
    if let Some(bucket) = name.strip_suffix(".s3") {
        return Some(S3Endpoint {
            bucket: Some(bucket),
            region: None,
        });
    }

    // `{bucket}.s3-{region}` or `{bucket}.s3.{region}`. A region never
    // contains a dot, so the last label is either `s3-{region}` or the region
    // that follows an `s3` label.
    let (head, last) = name.rsplit_once('.')?;
    if let Some(region) = last.strip_prefix("s3-").filter(|region| is_region(region)) {
        return Some(S3Endpoint {
            bucket: Some(head),
            region: Some(region),
        });
    }
    let bucket = head.strip_suffix(".s3").filter(|_| is_region(last))?;
    Some(S3Endpoint {
        bucket: Some(bucket),
        region: Some(last),
    })
}

/// Parses a URL whose host matched an S3 endpoint. A pre-signed URL is
/// returned as a plain URL, because its signature grants access by itself.
pub(super) fn parse_s3_url(url: Url, endpoint: &S3Endpoint) -> Result<AttachmentRef, UriError> {
    if is_presigned(&url) {
        return Ok(AttachmentRef::Http { url });
    }
    if url.scheme() != "https" {
        return Err(UriError::invalid(format!(
            "the S3 URL uses http: use https, as in {VIRTUAL_HOSTED_EXAMPLE}, \
             or send a pre-signed URL"
        )));
    }
    check_default_port(&url, "S3")?;
    if has_query(&url) {
        return Err(UriError::invalid(
            "the S3 URL has a query, and Attaché supports none on S3 URLs (a versionId, \
             for example, is not supported): remove the query to fetch the current \
             version, or send a pre-signed URL",
        ));
    }

    let path = path_without_slash(&url);
    let (bucket, raw_key, example) = match endpoint.bucket {
        Some(bucket) => (bucket, path, VIRTUAL_HOSTED_EXAMPLE),
        None => {
            let (bucket, raw_key) = path.split_once('/').unwrap_or((path, ""));
            if bucket.is_empty() {
                return Err(UriError::invalid(format!(
                    "the S3 URL names no bucket: write {PATH_STYLE_EXAMPLE}"
                )));
            }
            (bucket, raw_key, PATH_STYLE_EXAMPLE)
        }
    };
    check_bucket(bucket)?;
    let key = decode_path_part(raw_key, "S3 object key")?;
    check_key(&key, example)?;

    Ok(AttachmentRef::S3 {
        bucket: bucket.to_owned(),
        key,
        region: endpoint.region.map(str::to_owned),
    })
}

/// Matches the service label of a path-style host: `s3`, `s3.{region}` or
/// `s3-{region}`. Returns the region it names, if any.
fn match_service_label(label: &str) -> Option<Option<&str>> {
    if label == "s3" {
        return Some(None);
    }
    let region = label
        .strip_prefix("s3.")
        .or_else(|| label.strip_prefix("s3-"))?;
    is_region(region).then_some(Some(region))
}

/// Tells whether `name` has the shape of an AWS region code, such as
/// `us-east-1` or `us-gov-west-1`: a two-letter prefix, one or more words,
/// and a number, joined by hyphens. The shape rules out endpoint labels such
/// as `accelerate`, `dualstack` and `website-us-east-1`.
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    let [prefix, words @ .., number] = parts.as_slice() else {
        return false;
    };
    let is_word = |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase());
    prefix.len() == 2
        && is_word(prefix)
        && !words.is_empty()
        && words.iter().all(is_word)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Tells whether the query carries a pre-signed request's signature.
fn is_presigned(url: &Url) -> bool {
    url.query_pairs().any(|(name, _)| {
        SIGNATURE_PARAMETERS
            .iter()
            .any(|parameter| name.eq_ignore_ascii_case(parameter))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_shapes() {
        for region in [
            "us-east-1",
            "eu-central-1",
            "us-gov-west-1",
            "ap-southeast-2",
        ] {
            assert!(is_region(region), "{region} should be a region");
        }
        for name in [
            "accelerate",
            "dualstack",
            "website-us-east-1",
            "external-1",
            "us-east-",
        ] {
            assert!(!is_region(name), "{name} should not be a region");
        }
    }
}
