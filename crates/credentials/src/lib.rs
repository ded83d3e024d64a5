//! Credentials shared by the cloud access crates (`attache-aws`,
//! `attache-gcp`, `attache-azure`): the [`cache::CredentialCache`] of
//! expiring credentials with one request per key, the bearer
//! [`token::AccessToken`], and the credential metrics.
//!
//! Metrics: `attache_credential_requests_total{provider,outcome}` and
//! `attache_credential_cache_total{provider,result}`.

pub mod cache;
pub mod metrics;
pub mod token;
