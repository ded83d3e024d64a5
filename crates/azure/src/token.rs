//! Tenant tokens of our service principal, with their cache.
//!
//! A token is requested with the OAuth 2.0 client-credentials grant from
//! `{authority}/{tenant}/oauth2/v2.0/token`. The request is written here
//! rather than with `azure_identity`, because that crate sends through its
//! own HTTP client, so the request would bypass the egress pool. Token
//! requests go through the pool like every other request of a fetch: they
//! carry only our identity, but sending them from the static addresses
//! keeps one outbound path to reason about and lets tests see them.
//!
//! Tokens are cached per tenant in a [`CredentialCache`], renewed
//! `REFRESH_MARGIN` before they expire, and a refusal is remembered for
//! `FAILURE_TTL` so a tenant that withdrew consent does not hammer the
//! identity platform.

use std::time::{Duration, SystemTime};

use attache_credentials::cache::CredentialCache;
use attache_credentials::metrics::CREDENTIAL_REQUESTS;
use attache_egress::{Egress, SendError};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::AzureArgs;
use crate::consent::STORAGE_SCOPE;
pub use attache_credentials::token::AccessToken;

/// How long before expiry cached tokens are renewed.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed token request is remembered before it is sent again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Cached tenants kept at most; idle ones are dropped first.
const MAX_CACHED_TENANTS: usize = 10_000;
/// Maximum length of a token endpoint error body kept for a message.
pub(crate) const MAX_ERROR_BODY: usize = 4096;

/// The reason a tenant token could not be obtained.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TokenError {
    /// The tenant refused: our application has no consent there (never
    /// given, or removed from the tenant).
    #[error("{0}")]
    Denied(String),
    /// The destination guard denied the token endpoint, which is final.
    #[error("{0}")]
    Forbidden(String),
    /// No egress member was available, so the request is retried later.
    #[error("{0}")]
    EgressUnavailable(String),
    /// The identity platform throttled, failed or could not be reached, or
    /// rejected our own client credentials. The request is retried later.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Our application's settings, the egress pool and the tenant-token
/// cache. Cheap to share behind an `Arc`.
pub struct Azure {
    pub(crate) args: AzureArgs,
    pub(crate) egress: Egress,
    tokens: CredentialCache<String, AccessToken, TokenError>,
}

impl Azure {
    /// Builds the handle; token requests and blob reads go through `egress`.
    pub fn new(args: &AzureArgs, egress: Egress) -> Self {
        Self {
            args: args.clone(),
            egress,
            tokens: CredentialCache::new("azure", REFRESH_MARGIN, FAILURE_TTL, MAX_CACHED_TENANTS),
        }
    }

    /// Returns the settings this handle was built with.
    pub fn args(&self) -> &AzureArgs {
        &self.args
    }

    /// Returns a token for `tenant`, from the cache when it is fresh,
    /// otherwise from one token request shared by every waiter.
    pub async fn tenant_token(&self, tenant: &str) -> Result<AccessToken, TokenError> {
        self.tokens
            .get(tenant.to_owned(), || self.request_token(tenant))
            .await
    }

    /// Drops the cached token of `tenant`, after Blob Storage rejected it.
    pub fn forget(&self, tenant: &str) {
        self.tokens.forget(&tenant.to_owned());
    }

    /// Requests a token for `tenant` with the client-credentials grant,
    /// uncached.
    pub async fn request_token(&self, tenant: &str) -> Result<AccessToken, TokenError> {
        let result = self.send_token_request(tenant).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TokenError::Denied(_)) => "denied",
            Err(_) => "error",
        };
        CREDENTIAL_REQUESTS
            .with_label_values(&["azure", outcome])
            .inc();
        result
    }

    async fn send_token_request(&self, tenant: &str) -> Result<AccessToken, TokenError> {
        let url = token_url(&self.args.azure_authority, tenant);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", self.args.client_id())
            .append_pair(
                "client_secret",
                self.args.azure_client_secret.as_deref().unwrap_or_default(),
            )
            .append_pair("scope", STORAGE_SCOPE)
            .append_pair("grant_type", "client_credentials")
            .finish();
        let sent = self.egress.post(url, headers, body.into()).await;
        let response = match sent.result {
            Ok(response) => response,
            Err(SendError::Forbidden(denied)) => {
                return Err(TokenError::Forbidden(denied.to_string()));
            }
            Err(SendError::Unavailable) => {
                return Err(TokenError::EgressUnavailable(
                    "no egress member is available to reach the Microsoft identity platform; it will be retried"
                        .to_owned(),
                ));
            }
            Err(error) => {
                return Err(TokenError::Unavailable(format!(
                    "the Microsoft identity platform could not be reached ({})",
                    error_chain(&error)
                )));
            }
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let text = read_text(response, MAX_ERROR_BODY).await;
            let body: TokenErrorBody = serde_json::from_str(&text).unwrap_or_default();
            return Err(classify_token_error(status, tenant, &body));
        }
        let answer: TokenResponse = response.json().await.map_err(|error| {
            TokenError::Unavailable(format!(
                "the Microsoft identity platform returned an unreadable token response ({})",
                error_chain(&error)
            ))
        })?;
        Ok(AccessToken {
            token: answer.access_token,
            expires_at: Some(SystemTime::now() + Duration::from_secs(answer.expires_in)),
        })
    }
}

/// Builds the token endpoint of `tenant`. The tenant is one path segment;
/// the consent handler accepts only letters, digits, `-` and `.`, and any
/// other character is percent-encoded here as well.
fn token_url(authority: &Url, tenant: &str) -> Url {
    let mut url = authority.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
    }
    url
}

/// Classifies a failed token request by its status and OAuth error.
fn classify_token_error(status: u16, tenant: &str, body: &TokenErrorBody) -> TokenError {
    let detail = if body.error_description.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}, {}: {}", body.error, body.error_description)
    };
    match (status, body.error.as_str()) {
        (429 | 500..=599, _) => TokenError::Unavailable(format!(
            "the Microsoft identity platform is throttling or failing ({detail}); it will be retried"
        )),
        // A wrong or expired client secret is ours to fix, not the tenant's.
        (_, "invalid_client") => TokenError::Unavailable(format!(
            "the Microsoft identity platform rejected Attaché's own client credentials ({detail}); the operator must renew them"
        )),
        _ => TokenError::Denied(format!(
            "tenant {tenant} refused a token for Attaché's application ({detail})"
        )),
    }
}

/// Reads at most `limit` bytes of an error response's body as text.
pub(crate) async fn read_text(response: reqwest::Response, limit: usize) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]).into_owned()
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
    fn token_url_puts_the_tenant_in_the_path() {
        let authority = Url::parse("https://login.microsoftonline.com").unwrap();
        assert_eq!(
            token_url(&authority, "contoso.onmicrosoft.com").as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        let nested = Url::parse("http://127.0.0.1:9/login/").unwrap();
        assert_eq!(
            token_url(&nested, "a/b").as_str(),
            "http://127.0.0.1:9/login/a%2Fb/oauth2/v2.0/token"
        );
    }

    #[test]
    fn token_errors_are_classified() {
        let body = |error: &str| TokenErrorBody {
            error: error.to_owned(),
            error_description: "AADSTS".to_owned(),
        };
        assert!(matches!(
            classify_token_error(400, "t", &body("unauthorized_client")),
            TokenError::Denied(_)
        ));
        assert!(matches!(
            classify_token_error(400, "t", &body("invalid_request")),
            TokenError::Denied(_)
        ));
        assert!(matches!(
            classify_token_error(401, "t", &body("invalid_client")),
            TokenError::Unavailable(_)
        ));
        assert!(matches!(
            classify_token_error(429, "t", &body("")),
            TokenError::Unavailable(_)
        ));
        assert!(matches!(
            classify_token_error(503, "t", &TokenErrorBody::default()),
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
