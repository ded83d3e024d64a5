//! Google Cloud access for Attaché: the two ways a team's `gs://`
//! attachments are read, and the checks behind a team's impersonation
//! settings.
//!
//! - Impersonation: our service account mints a short-lived token for the
//!   team's own service account with the IAM Credentials
//!   `generateAccessToken` call, then reads the object with that token.
//!   Once a team activated impersonation, our own token is never used for
//!   its objects, and a failed impersonation fails the attachment.
//! - Cross-project: the object is read with our own service account's
//!   token, which the customer granted on the bucket.
//!
//! [`token`] contains our own token and the impersonated-token cache (one
//! `generateAccessToken` call per service account however many fetches
//! wait); [`storage`] reads objects with the Cloud Storage JSON API and
//! classifies its statuses; [`integration`] generates team identifiers,
//! validates service account emails and checks a link before it is
//! activated. Every request, to IAM Credentials and to Cloud Storage, goes
//! through the egress pool and its destination guard.
//!
//! Metrics: `attache_credential_requests_total{provider="gcp",outcome}` and
//! `attache_credential_cache_total{provider="gcp",result}`.

pub mod integration;
pub mod storage;
pub mod token;

use std::time::Duration;

use attache_config::parse_duration;
use clap::Args;
use url::Url;

pub use token::{AccessToken, Gcp, TokenError};

/// Google Cloud settings; Cloud Storage is enabled when
/// `gcp_service_account` is set.
#[derive(Args, Clone, Debug)]
pub struct GcpArgs {
    /// Our service account email, which customers grant Service Account
    /// Token Creator on theirs (impersonation) or Storage Object Viewer on
    /// their buckets (cross-project). Setting it enables `gs://`
    /// attachments.
    #[arg(long, env = "ATTACHE_GCP_SERVICE_ACCOUNT")]
    pub gcp_service_account: Option<String>,

    /// A static OAuth 2.0 access token of our service account, for tests and
    /// emulators; it is never renewed. Without it, our identity comes from
    /// Application Default Credentials (a key file, gcloud's credentials or
    /// the metadata server).
    #[arg(long, env = "ATTACHE_GCP_ACCESS_TOKEN", hide_env_values = true)]
    pub gcp_access_token: Option<String>,

    /// Base URL of the Cloud Storage JSON API.
    #[arg(
        long,
        env = "ATTACHE_GCP_STORAGE_ENDPOINT",
        default_value = "https://storage.googleapis.com"
    )]
    pub gcp_storage_endpoint: Url,

    /// Base URL of the IAM Service Account Credentials API.
    #[arg(
        long,
        env = "ATTACHE_GCP_IAM_ENDPOINT",
        default_value = "https://iamcredentials.googleapis.com"
    )]
    pub gcp_iam_endpoint: Url,

    /// Lifetime requested for impersonated tokens. Google allows up to one
    /// hour unless the customer's organisation policy
    /// `constraints/iam.allowServiceAccountCredentialLifetimeExtension`
    /// allows up to 12 hours.
    #[arg(long, env = "ATTACHE_GCP_TOKEN_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    pub gcp_token_lifetime: Duration,
}

impl Default for GcpArgs {
    fn default() -> Self {
        Self {
            gcp_service_account: None,
            gcp_access_token: None,
            gcp_storage_endpoint: Url::parse("https://storage.googleapis.com")
                .expect("the default storage endpoint is a valid URL"),
            gcp_iam_endpoint: Url::parse("https://iamcredentials.googleapis.com")
                .expect("the default IAM endpoint is a valid URL"),
            gcp_token_lifetime: Duration::from_secs(3600),
        }
    }
}

impl GcpArgs {
    /// Tells whether `gs://` attachments are enabled.
    pub fn enabled(&self) -> bool {
        self.gcp_service_account.is_some()
    }
}
