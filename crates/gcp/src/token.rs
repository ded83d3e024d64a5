//! Our own token and impersonated tokens with their cache.
//!
//! Impersonated tokens are cached per service account in a
//! [`CredentialCache`], so any number of concurrent fetches for one team
//! make one `generateAccessToken` call. Tokens are renewed `REFRESH_MARGIN`
//! before they expire, and a denial is remembered for `FAILURE_TTL` so a
//! misconfigured team does not hammer IAM Credentials.

use std::time::Duration;

use attache_credentials::cache::CredentialCache;
use attache_credentials::metrics::CREDENTIAL_REQUESTS;
use attache_egress::{Egress, SendError};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::GcpArgs;
pub use attache_credentials::token::AccessToken;

/// How long before expiry cached tokens are renewed.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed `generateAccessToken` is remembered before IAM
/// Credentials is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Cached service accounts kept at most; idle ones are dropped first.
const MAX_CACHED_ACCOUNTS: usize = 10_000;
/// The OAuth scope of impersonated tokens: read objects, nothing else.
pub const READ_ONLY_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// Longest IAM Credentials error body kept for a message.
pub(crate) const MAX_ERROR_BODY: usize = 4096;

/// The reason a token could not be obtained.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// IAM Credentials refused: our service account lacks Service Account
    /// Token Creator on the account, or the account does not exist.
    #[error("{0}")]
    Denied(String),
    /// The destination guard denied the IAM Credentials endpoint; final.
    #[error("{0}")]
    Forbidden(String),
    /// No egress member was available; retry later.
    #[error("{0}")]
    EgressUnavailable(String),
    /// IAM Credentials throttled, failed or could not be reached, or our
    /// own credentials were rejected; retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// Our Google Cloud identity, the egress pool and the impersonated-token
/// cache. Cheap to share behind an `Arc`.
pub struct Gcp {
    pub(crate) args: GcpArgs,
    pub(crate) egress: Egress,
    own: OwnIdentity,
    tokens: CredentialCache<String, AccessToken, TokenError>,
}

/// The source of our own token.
enum OwnIdentity {
    /// `ATTACHE_GCP_ACCESS_TOKEN`, for tests and emulators.
    Static(AccessToken),
    /// Application Default Credentials, which renew their token themselves.
    /// Their token requests (to Google's OAuth endpoint or the metadata
    /// server) use google-cloud-auth's own HTTP client, not the egress pool:
    /// they carry our identity, not a customer's destination.
    Adc(google_cloud_auth::credentials::AccessTokenCredentials),
}

/// The Gcp handle could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no Google Cloud credentials were found for ATTACHE_GCP_SERVICE_ACCOUNT ({0}): set GOOGLE_APPLICATION_CREDENTIALS to a key file of that service account, run on Google Cloud as it, or set ATTACHE_GCP_ACCESS_TOKEN for tests"
    )]
    Credentials(String),
}

/// The OAuth scope of our own token, which generateAccessToken requires.
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateAccessTokenResponse {
    access_token: String,
    expire_time: chrono::DateTime<chrono::Utc>,
}

impl Gcp {
    /// Builds the handle; every request to Cloud Storage and IAM
    /// Credentials goes through `egress`. Our identity is the static token
    /// when one is configured, else Application Default Credentials.
    pub fn new(args: &GcpArgs, egress: Egress) -> Result<Self, ConfigError> {
        let own = match args
            .gcp_access_token
            .clone()
            .filter(|token| !token.is_empty())
        {
            Some(token) => OwnIdentity::Static(AccessToken {
                token,
                expires_at: None,
            }),
            None => OwnIdentity::Adc(application_default_credentials()?),
        };
        Ok(Self {
            args: args.clone(),
            egress,
            own,
            tokens: CredentialCache::new("gcp", REFRESH_MARGIN, FAILURE_TTL, MAX_CACHED_ACCOUNTS),
        })
    }

    /// Our own service account's email.
    pub fn service_account(&self) -> &str {
        self.args.gcp_service_account.as_deref().unwrap_or_default()
    }

    /// Returns our own service account's token, for cross-project reads
    /// and for generateAccessToken.
    pub async fn own_token(&self) -> Result<AccessToken, TokenError> {
        match &self.own {
            OwnIdentity::Static(token) => Ok(token.clone()),
            OwnIdentity::Adc(credentials) => {
                let token = credentials.access_token().await.map_err(|error| {
                    TokenError::Unavailable(format!(
                        "Attaché's own Google Cloud token could not be obtained ({error})"
                    ))
                })?;
                // google-cloud-auth 1.19 caches the token and renews it
                // about four minutes before it expires (its token_cache.rs),
                // so the copy handed out is used for one request only.
                Ok(AccessToken {
                    token: token.token,
                    expires_at: None,
                })
            }
        }
    }

    /// Returns a token for `service_account`, from the cache when it is
    /// fresh, otherwise from one `generateAccessToken` call shared by every
    /// waiter.
    pub async fn impersonated_token(
        &self,
        service_account: &str,
    ) -> Result<AccessToken, TokenError> {
        self.tokens
            .get(service_account.to_owned(), || {
                self.generate_access_token(service_account)
            })
            .await
    }

    /// Drops the cached token of `service_account`, after Cloud Storage
    /// rejected it.
    pub fn forget(&self, service_account: &str) {
        self.tokens.forget(&service_account.to_owned());
    }

    /// Calls IAM Credentials `generateAccessToken` for `service_account`
    /// with our own token, uncached.
    pub async fn generate_access_token(
        &self,
        service_account: &str,
    ) -> Result<AccessToken, TokenError> {
        let result = self.request_token(service_account).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TokenError::Denied(_)) => "denied",
            Err(_) => "error",
        };
        CREDENTIAL_REQUESTS
            .with_label_values(&["gcp", outcome])
            .inc();
        result
    }

    async fn request_token(&self, service_account: &str) -> Result<AccessToken, TokenError> {
        let url = generate_access_token_url(&self.args.gcp_iam_endpoint, service_account);
        let mut headers = self.own_token().await?.authorization();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let request = serde_json::json!({
            "scope": [READ_ONLY_SCOPE],
            "lifetime": format!("{}s", self.args.gcp_token_lifetime.as_secs()),
        });
        let sent = self
            .egress
            .post(url, headers, request.to_string().into())
            .await;
        let response = match sent.result {
            Ok(response) => response,
            Err(SendError::Forbidden(denied)) => {
                return Err(TokenError::Forbidden(denied.to_string()));
            }
            Err(SendError::Unavailable) => {
                return Err(TokenError::EgressUnavailable(
                    "no egress member is available to reach IAM Credentials; it will be retried"
                        .to_owned(),
                ));
            }
            Err(error) => {
                return Err(TokenError::Unavailable(format!(
                    "IAM Credentials could not be reached ({})",
                    error_chain(&error)
                )));
            }
        };
        let status = response.status();
        if !status.is_success() {
            let detail = google_error_message(&read_text(response, MAX_ERROR_BODY).await);
            return Err(classify_iam_status(
                status.as_u16(),
                service_account,
                &detail,
            ));
        }
        let answer: GenerateAccessTokenResponse = response.json().await.map_err(|error| {
            TokenError::Unavailable(format!(
                "IAM Credentials returned an unreadable generateAccessToken response body ({})",
                error_chain(&error)
            ))
        })?;
        Ok(AccessToken {
            token: answer.access_token,
            expires_at: Some(answer.expire_time.into()),
        })
    }
}

/// Loads Application Default Credentials: the key file named by
/// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's default file, or else the
/// metadata server.
// NOTE: this path has not run in the tests, which always pass a static
// token so that nothing reaches a metadata server.
fn application_default_credentials()
-> Result<google_cloud_auth::credentials::AccessTokenCredentials, ConfigError> {
    // google-cloud-auth built without its default features signs key-file
    // JWTs with the process-wide rustls provider and panics if none is
    // installed. An error means one is installed already, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    google_cloud_auth::credentials::Builder::default()
        .with_scopes([CLOUD_PLATFORM_SCOPE])
        .build_access_token_credentials()
        .map_err(|error| ConfigError::Credentials(error.to_string()))
}

/// Builds the `generateAccessToken` URL of `service_account`. The email is one
/// path segment, so its characters other than letters, digits, `@`, `.`,
/// `-` and `_` are percent-encoded.
fn generate_access_token_url(endpoint: &Url, service_account: &str) -> Url {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'@')
        .remove(b'.')
        .remove(b'-')
        .remove(b'_');
    let account = percent_encoding::utf8_percent_encode(service_account, SEGMENT);
    let base = endpoint.as_str().trim_end_matches('/');
    Url::parse(&format!(
        "{base}/v1/projects/-/serviceAccounts/{account}:generateAccessToken"
    ))
    .expect("a valid base URL with an encoded path segment is a valid URL")
}

/// Classifies a failed `generateAccessToken` by its HTTP status.
fn classify_iam_status(status: u16, service_account: &str, detail: &str) -> TokenError {
    match status {
        429 | 500..=599 => TokenError::Unavailable(format!(
            "IAM Credentials is throttling or failing (HTTP {status}: {detail}); it will be retried"
        )),
        401 => TokenError::Unavailable(format!(
            "IAM Credentials rejected Attaché's own credentials (HTTP 401: {detail}); the operator must renew them"
        )),
        _ => TokenError::Denied(format!(
            "IAM Credentials rejected a token for {service_account} (HTTP {status}: {detail})"
        )),
    }
}

/// Reads at most `limit` bytes of an error response's body as text.
pub(crate) async fn read_text(response: reqwest::Response, limit: usize) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned()
}

/// Returns the `error.message` of a Google API error body, or the body.
pub(crate) fn google_error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// Formats an error with its causes, without any URL.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_url_encodes_the_email_as_one_segment() {
        let endpoint = Url::parse("https://iamcredentials.googleapis.com/").unwrap();
        let url =
            generate_access_token_url(&endpoint, "attache-ab12cd34@proj-1.iam.gserviceaccount.com");
        assert_eq!(
            url.as_str(),
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/attache-ab12cd34@proj-1.iam.gserviceaccount.com:generateAccessToken"
        );
        let odd = generate_access_token_url(&endpoint, "a/b?c@p.iam.gserviceaccount.com");
        assert!(odd.path().contains("a%2Fb%3Fc@"), "{odd}");
        assert_eq!(odd.query(), None);
    }

    #[test]
    fn iam_statuses_are_classified() {
        let sa = "x@p.iam.gserviceaccount.com";
        assert!(matches!(
            classify_iam_status(403, sa, ""),
            TokenError::Denied(_)
        ));
        assert!(matches!(
            classify_iam_status(404, sa, ""),
            TokenError::Denied(_)
        ));
        assert!(matches!(
            classify_iam_status(429, sa, ""),
            TokenError::Unavailable(_)
        ));
        assert!(matches!(
            classify_iam_status(503, sa, ""),
            TokenError::Unavailable(_)
        ));
        assert!(matches!(
            classify_iam_status(401, sa, ""),
            TokenError::Unavailable(_)
        ));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = AccessToken {
            token: "secret-token".to_owned(),
            expires_at: None,
        };
        assert!(!format!("{token:?}").contains("secret-token"));
    }
}
