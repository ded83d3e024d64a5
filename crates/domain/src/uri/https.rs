//! `http://` and `https://` URLs: the checks every URL passes, then the
//! choice between an Azure blob, an S3 object and a plain URL by exact host
//! suffix.

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::{AttachmentRef, UriError, azure, s3_url};

/// Parses an input whose scheme is `http` or `https`, in any case.
/// `scheme` is the lowercased scheme and `after_slashes` the text after
/// `scheme://`.
pub(super) fn parse_http_url(
    input: &str,
    scheme: &str,
    after_slashes: &str,
) -> Result<AttachmentRef, UriError> {
    // The URL parser skips any number of slashes and backslashes after
    // `http:` and reads `http:///a` as host `a`, so the host must follow
    // `//` as written.
    if after_slashes.starts_with(['/', '\\']) {
        return Err(UriError::invalid(format!(
            "the URL has no host, because `{scheme}://` is followed by another slash or a \
             backslash: write it as {scheme}://host/path/to/file"
        )));
    }
    let mut url = Url::parse(input).map_err(|error| match error {
        url::ParseError::EmptyHost => {
            UriError::invalid("the URL has no host: write it as https://host/path/to/file")
        }
        // `url` error messages name the problem without repeating the input.
        other => UriError::invalid(format!(
            "the URL is invalid ({other}): check it for typos, and percent-encode \
             characters that are not allowed in URLs"
        )),
    })?;

    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriError::credentials());
    }
    // The fragment never reaches the server, so it cannot change what is
    // fetched.
    url.set_fragment(None);

    if url.port() == Some(0) {
        return Err(UriError::invalid(
            "the URL names port 0, which no server listens on: remove the port, or give \
             the port the server listens on",
        ));
    }

    let host = match url.host() {
        Some(Host::Domain(domain)) => domain.to_owned(),
        // An IP address is fetched as a plain URL. The egress checks decide
        // whether the address may be reached.
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => return Ok(AttachmentRef::Http { url }),
        None => {
            return Err(UriError::invalid(
                "the URL has no host: write it as https://host/path/to/file",
            ));
        }
    };

    if let Some(account) = azure::account_from_host(&host) {
        return azure::parse_azure_url(&url, account);
    }
    if let Some(endpoint) = s3_url::match_endpoint(&host) {
        return s3_url::parse_s3_url(url, &endpoint);
    }
    Ok(AttachmentRef::Http { url })
}

/// Tells whether `url` has a non-empty query. Callers must not put the query
/// in a message, because it may carry a signature or token.
pub(super) fn has_query(url: &Url) -> bool {
    url.query().is_some_and(|query| !query.is_empty())
}

/// Rejects a port other than the scheme's default, which the provider's own
/// endpoint does not serve on.
pub(super) fn check_default_port(url: &Url, service: &str) -> Result<(), UriError> {
    match url.port() {
        Some(port) => Err(UriError::invalid(format!(
            "the {service} URL names port {port}: remove the port, because {service} \
             serves https on the default port"
        ))),
        None => Ok(()),
    }
}

/// Percent-decodes one part of a URL path once and requires the result to be
/// UTF-8 without control characters. `part_name` names the part in messages.
pub(super) fn decode_path_part(raw: &str, part_name: &str) -> Result<String, UriError> {
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
        UriError::invalid(format!(
            "the {part_name} is not valid UTF-8 after percent-decoding: \
             percent-encode the name's UTF-8 bytes"
        ))
    })?;
    if decoded.chars().any(|c| c.is_ascii_control()) {
        return Err(UriError::invalid(format!(
            "the {part_name} contains a control character after percent-decoding: remove it"
        )));
    }
    Ok(decoded.into_owned())
}

/// Returns the URL path without its leading `/`, still percent-encoded.
pub(super) fn path_without_slash(url: &Url) -> &str {
    let path = url.path();
    path.strip_prefix('/').unwrap_or(path)
}
