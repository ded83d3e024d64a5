//! Which identity a team's fetch uses for a provider.
//!
//! The rule customers rely on lives here and nowhere else: once a team has
//! activated delegated access for a provider, its URIs of that provider are
//! read only through the delegation, never with our own identity, and a
//! failed delegation fails the attachment.

use attache_domain::Provider;
use attache_store::fetches::FetchTarget;

/// The identity a fetch runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessPath {
    /// No credentials: public URLs.
    Anonymous,
    /// Our own AWS identity, granted by the customer's bucket policy.
    AwsOwn,
    /// The team's role in its own account, assumed with its External ID.
    AwsRole {
        account_id: String,
        external_id: String,
    },
}

impl AccessPath {
    /// A label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::AwsOwn => "cross_account",
            Self::AwsRole { .. } => "delegated",
        }
    }
}

/// Chooses the access path of `target`'s team for `provider`; `None` when
/// this deployment cannot fetch from the provider.
pub fn resolve(target: &FetchTarget, provider: Provider, aws_enabled: bool) -> Option<AccessPath> {
    match provider {
        Provider::Http => Some(AccessPath::Anonymous),
        Provider::S3 if aws_enabled => Some(aws_path(target)),
        Provider::S3 | Provider::Gcs | Provider::AzureBlob => None,
    }
}

fn aws_path(target: &FetchTarget) -> AccessPath {
    let aws = &target.aws;
    match (&aws.linked_at, &aws.account_id, &aws.external_id) {
        (Some(_), Some(account_id), Some(external_id)) => AccessPath::AwsRole {
            account_id: account_id.clone(),
            external_id: external_id.clone(),
        },
        // Activation stores the account and External ID before the link
        // time, so a linked team always has both.
        _ => AccessPath::AwsOwn,
    }
}

#[cfg(test)]
mod tests {
    use attache_domain::{AttachmentId, AttachmentStatus, TaskId, TeamId};
    use attache_store::integrations::AwsIntegration;

    use super::*;

    fn target(aws: AwsIntegration) -> FetchTarget {
        FetchTarget {
            attachment_id: AttachmentId::new(),
            task_id: TaskId::new(),
            team_id: TeamId::new(),
            uri: "s3://bucket/key".to_owned(),
            status: AttachmentStatus::Pending,
            attempts: 0,
            retry_window_start: chrono::Utc::now(),
            aws,
        }
    }

    #[test]
    fn linked_team_uses_only_its_role() {
        let linked = target(AwsIntegration {
            external_id: Some("attache-x".to_owned()),
            account_id: Some("123456789012".to_owned()),
            linked_at: Some(chrono::Utc::now()),
            bucket_owners: Vec::new(),
        });
        assert_eq!(
            resolve(&linked, Provider::S3, true),
            Some(AccessPath::AwsRole {
                account_id: "123456789012".to_owned(),
                external_id: "attache-x".to_owned()
            })
        );
    }

    #[test]
    fn unlinked_team_uses_our_identity() {
        let unlinked = target(AwsIntegration {
            external_id: Some("attache-x".to_owned()),
            account_id: Some("123456789012".to_owned()),
            linked_at: None,
            bucket_owners: Vec::new(),
        });
        assert_eq!(
            resolve(&unlinked, Provider::S3, true),
            Some(AccessPath::AwsOwn)
        );
        assert_eq!(resolve(&unlinked, Provider::S3, false), None);
        assert_eq!(resolve(&unlinked, Provider::Gcs, true), None);
        assert_eq!(
            resolve(&unlinked, Provider::Http, false),
            Some(AccessPath::Anonymous)
        );
    }
}
