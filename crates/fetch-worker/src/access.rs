//! Which identity a team's fetch uses for a provider.
//!
//! The rule customers rely on lives here and nowhere else: once a team has
//! activated delegated access for a provider, its URIs of that provider are
//! read only through the delegation, never with our own identity, and a
//! failed delegation fails the attachment. For Azure the same holds
//! between the tenant link and anonymous access: a linked team's blobs are
//! read only with a token for the tenant recorded at consent, and an
//! unlinked team's anonymously.

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
    /// Our own Google Cloud service account, granted on the customer's
    /// bucket (cross-project).
    GcpOwn,
    /// The team's service account, impersonated by ours.
    GcpImpersonated { service_account: String },
    /// Our service principal in the tenant that granted the team's consent.
    AzureTenant { tenant: String },
}

impl AccessPath {
    /// Returns a label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::AwsOwn => "cross_account",
            Self::AwsRole { .. } => "delegated",
            Self::GcpOwn => "cross_project",
            Self::GcpImpersonated { .. } => "impersonated",
            Self::AzureTenant { .. } => "service_principal",
        }
    }
}

/// Chooses the access path of `target`'s team for `provider`; `None` when
/// this deployment cannot fetch from the provider (`enabled` returns
/// false).
pub fn resolve(
    target: &FetchTarget,
    provider: Provider,
    enabled: impl Fn(Provider) -> bool,
) -> Option<AccessPath> {
    if !enabled(provider) {
        return None;
    }
    match provider {
        Provider::Http => Some(AccessPath::Anonymous),
        Provider::S3 => Some(aws_path(target)),
        Provider::Gcs => Some(gcp_path(target)),
        Provider::AzureBlob => Some(azure_path(target)),
    }
}

fn azure_path(target: &FetchTarget) -> AccessPath {
    let azure = &target.azure;
    match (&azure.linked_at, &azure.tenant) {
        (Some(_), Some(tenant)) => AccessPath::AzureTenant {
            tenant: tenant.clone(),
        },
        // Linking stores the tenant with the link time and unlinking clears
        // both, so a linked team always has a tenant.
        _ => AccessPath::Anonymous,
    }
}

fn gcp_path(target: &FetchTarget) -> AccessPath {
    let gcp = &target.gcp;
    match (&gcp.linked_at, &gcp.service_account) {
        (Some(_), Some(service_account)) => AccessPath::GcpImpersonated {
            service_account: service_account.clone(),
        },
        // Activation stores the service account with the link time, so a
        // linked team always has one.
        _ => AccessPath::GcpOwn,
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
    use attache_store::integrations::{AwsIntegration, AzureIntegration, GcpIntegration};

    use super::*;

    fn target(aws: AwsIntegration) -> FetchTarget {
        target_with(aws, GcpIntegration::default())
    }

    fn target_with(aws: AwsIntegration, gcp: GcpIntegration) -> FetchTarget {
        FetchTarget {
            attachment_id: AttachmentId::new(),
            task_id: TaskId::new(),
            team_id: TeamId::new(),
            uri: "s3://bucket/key".to_owned(),
            status: AttachmentStatus::Pending,
            attempts: 0,
            retry_window_start: chrono::Utc::now(),
            aws,
            gcp,
            azure: AzureIntegration::default(),
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
            resolve(&linked, Provider::S3, |_| true),
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
            resolve(&unlinked, Provider::S3, |_| true),
            Some(AccessPath::AwsOwn)
        );
        assert_eq!(
            resolve(&unlinked, Provider::S3, |p| p != Provider::S3),
            None
        );
        assert_eq!(
            resolve(&unlinked, Provider::Gcs, |p| p != Provider::Gcs),
            None
        );
        assert_eq!(
            resolve(&unlinked, Provider::Http, |p| p == Provider::Http),
            Some(AccessPath::Anonymous)
        );
    }

    #[test]
    fn impersonating_team_uses_only_its_service_account() {
        let account = "attache-ab12cd34@p-123456.iam.gserviceaccount.com".to_owned();
        let linked = target_with(
            AwsIntegration::default(),
            GcpIntegration {
                identifier: Some("ab12cd34".to_owned()),
                service_account: Some(account.clone()),
                linked_at: Some(chrono::Utc::now()),
            },
        );
        assert_eq!(
            resolve(&linked, Provider::Gcs, |_| true),
            Some(AccessPath::GcpImpersonated {
                service_account: account.clone()
            })
        );
        let unlinked = target_with(
            AwsIntegration::default(),
            GcpIntegration {
                identifier: Some("ab12cd34".to_owned()),
                service_account: Some(account),
                linked_at: None,
            },
        );
        assert_eq!(
            resolve(&unlinked, Provider::Gcs, |_| true),
            Some(AccessPath::GcpOwn)
        );
    }

    #[test]
    fn linked_team_uses_only_its_tenant() {
        let mut linked = target(AwsIntegration::default());
        linked.azure = AzureIntegration {
            tenant: Some("contoso.onmicrosoft.com".to_owned()),
            linked_at: Some(chrono::Utc::now()),
        };
        assert_eq!(
            resolve(&linked, Provider::AzureBlob, |_| true),
            Some(AccessPath::AzureTenant {
                tenant: "contoso.onmicrosoft.com".to_owned()
            })
        );
        let unlinked = target(AwsIntegration::default());
        assert_eq!(
            resolve(&unlinked, Provider::AzureBlob, |_| true),
            Some(AccessPath::Anonymous)
        );
        assert_eq!(
            resolve(&linked, Provider::AzureBlob, |p| p != Provider::AzureBlob),
            None
        );
    }
}
