//! Which identity a team's fetch uses for a provider.
//!
//! Plain http(s) URLs are always fetched anonymously through the egress.
//! Delegated access for S3, Cloud Storage and Azure adds variants here, and
//! the rule that a team's configured delegation is never replaced by our own
//! identity lives in [`resolve`], nowhere else.

use attache_domain::{Provider, TeamId};

/// The identity a fetch runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessPath {
    /// No credentials: public URLs.
    Anonymous,
}

impl AccessPath {
    /// A label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
        }
    }
}

/// Chooses the access path of `team`'s fetch from `provider`; `None` when
/// this deployment has no way to fetch from the provider.
pub fn resolve(_team: TeamId, provider: Provider) -> Option<AccessPath> {
    match provider {
        Provider::Http => Some(AccessPath::Anonymous),
        Provider::S3 | Provider::Gcs | Provider::AzureBlob => None,
    }
}
