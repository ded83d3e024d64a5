//! AWS access for Attaché: the two ways a team's `s3://` attachments are
//! read, and the checks behind a team's delegated-access settings.
//!
//! - Delegated: STS AssumeRole into `arn:aws:iam::{team account}:role/{role
//!   name}` with the team's External ID, then GetObject with the assumed
//!   credentials. Once a team activated delegation, our own identity is
//!   never used for its objects, and a failed AssumeRole fails the
//!   attachment.
//! - Cross-account: GetObject with our own identity, which the customer
//!   granted in a bucket policy.
//!
//! [`credentials`] caches assumed credentials per role with one STS call
//! per role however many fetches wait (the cache is
//! `attache_credentials::cache`); [`s3`] streams objects and classifies
//! errors into codes whose messages say what the customer must change;
//! [`integration`] builds the policies shown to customers and checks a link
//! before it is activated. S3 traffic goes to AWS directly, not through the
//! egress pool: customers allow S3 access by identity, not by address.
//!
//! Metrics: `attache_credential_requests_total{provider,outcome}` and
//! `attache_credential_cache_total{provider,result}`.

pub mod credentials;
pub mod integration;
pub mod s3;

use std::time::Duration;

use attache_config::parse_duration;
use clap::Args;

pub use credentials::{AssumeError, Aws, Identity};
pub use s3::{S3Error, S3Object};

/// AWS settings; S3 is enabled when `aws_account_id` is set.
#[derive(Args, Clone, Debug, Default)]
pub struct AwsArgs {
    /// Our AWS account ID, which customers name in their role's trust
    /// policy. Setting it enables `s3://` attachments.
    #[arg(long, env = "ATTACHE_AWS_ACCOUNT_ID")]
    pub aws_account_id: Option<String>,

    /// Name of the role each team creates in its own account; the team
    /// supplies only its account ID.
    #[arg(long, env = "ATTACHE_AWS_ROLE_NAME", default_value = "AttacheReader")]
    pub aws_role_name: String,

    /// ARN of our identity as trust policies must name it. Defaults to our
    /// account's root, which lets any of our roles with sts:AssumeRole in.
    #[arg(long, env = "ATTACHE_AWS_PRINCIPAL_ARN")]
    pub aws_principal_arn: Option<String>,

    /// Region of the S3 and STS clients; buckets elsewhere are found by
    /// S3's redirect.
    #[arg(long, env = "ATTACHE_AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// S3 endpoint override, for S3-compatible stores and tests.
    #[arg(long, env = "ATTACHE_AWS_S3_ENDPOINT_URL")]
    pub aws_s3_endpoint_url: Option<String>,

    /// STS endpoint override, for tests.
    #[arg(long, env = "ATTACHE_AWS_STS_ENDPOINT_URL")]
    pub aws_sts_endpoint_url: Option<String>,

    /// Access key of our own identity. Without it, the AWS SDK's default
    /// chain is used (environment, web identity, instance profile).
    #[arg(long, env = "ATTACHE_AWS_ACCESS_KEY_ID")]
    pub aws_access_key_id: Option<String>,

    /// Secret key of our own identity, with `aws_access_key_id`.
    #[arg(long, env = "ATTACHE_AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,

    /// Lifetime requested for assumed-role credentials (15 minutes to the
    /// role's maximum, one hour by default).
    #[arg(long, env = "ATTACHE_AWS_SESSION_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub aws_session_duration: Duration,
}

impl AwsArgs {
    /// Tells whether `s3://` attachments are enabled.
    pub fn enabled(&self) -> bool {
        self.aws_account_id.is_some()
    }
}
