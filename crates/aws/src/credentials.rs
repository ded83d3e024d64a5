//! Our identity, assumed-role credentials and their cache.
//!
//! Assumed credentials are cached per role ARN and External ID in a
//! [`CredentialCache`], so any number of concurrent fetches for one team
//! make one AssumeRole call. Credentials are renewed `REFRESH_MARGIN`
//! before they expire, and a denial is remembered for `FAILURE_TTL` so a
//! misconfigured team does not hammer STS.

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::Region;
use aws_sdk_sts::error::ProvideErrorMetadata;

use crate::AwsArgs;
use attache_credentials::cache::CredentialCache;
use attache_credentials::metrics::CREDENTIAL_REQUESTS;

/// How long before expiry cached credentials are renewed.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed AssumeRole is remembered before STS is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Cached roles kept at most; expired ones are dropped first.
const MAX_CACHED_ROLES: usize = 10_000;

/// The reason a role could not be assumed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AssumeError {
    /// STS refused: the trust policy does not let us in with this External
    /// ID, or the role does not exist.
    #[error("{0}")]
    Denied(String),
    /// STS throttled or failed; retry later.
    #[error("{0}")]
    Unavailable(String),
}

/// The identity a request runs as.
#[derive(Clone, Debug)]
pub enum Identity {
    /// Our own identity (cross-account access).
    Own,
    /// A team's role, with the credentials assumed for it.
    Role {
        role_arn: String,
        credentials: Credentials,
    },
}

/// A cache key: role ARN and External ID.
type RoleKey = (String, String);

/// AWS clients and the assumed-credential cache. Cheap to share.
pub struct Aws {
    pub(crate) args: AwsArgs,
    pub(crate) own: SharedCredentialsProvider,
    sts: aws_sdk_sts::Client,
    roles: CredentialCache<RoleKey, Credentials, AssumeError>,
    pub(crate) s3: crate::s3::Clients,
}

impl Aws {
    /// Builds the clients. With no static key configured, our identity
    /// comes from the AWS SDK's default chain.
    pub async fn new(args: &AwsArgs) -> Self {
        let own = match (&args.aws_access_key_id, &args.aws_secret_access_key) {
            (Some(key), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
                key,
                secret,
                None,
                None,
                "attache-static",
            )),
            _ => aws_config::defaults(BehaviorVersion::latest())
                .load()
                .await
                .credentials_provider()
                .expect("the default chain always provides credentials"),
        };
        let mut sts = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(args.aws_region.clone()))
            .credentials_provider(own.clone());
        if let Some(endpoint) = &args.aws_sts_endpoint_url {
            sts = sts.endpoint_url(endpoint);
        }
        Self {
            args: args.clone(),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            own,
            roles: CredentialCache::new("aws", REFRESH_MARGIN, FAILURE_TTL, MAX_CACHED_ROLES),
            s3: crate::s3::Clients::default(),
        }
    }

    /// Returns the ARN of the role a team with `account_id` creates.
    pub fn role_arn(&self, account_id: &str) -> String {
        format!("arn:aws:iam::{account_id}:role/{}", self.args.aws_role_name)
    }

    /// Returns credentials for `role_arn`, from the cache when they are
    /// fresh, otherwise from one AssumeRole call shared by every waiter.
    pub async fn role_credentials(
        &self,
        role_arn: &str,
        external_id: &str,
    ) -> Result<Credentials, AssumeError> {
        let key = (role_arn.to_owned(), external_id.to_owned());
        self.roles
            .get(key, || self.assume(role_arn, Some(external_id)))
            .await
    }

    /// Returns the identity for a team: its role when `delegation` (account
    /// ID, External ID) is set, else our own. A delegated team never gets
    /// our own identity, whatever STS returns.
    pub async fn identity(
        &self,
        delegation: Option<(&str, &str)>,
    ) -> Result<Identity, AssumeError> {
        let Some((account_id, external_id)) = delegation else {
            return Ok(Identity::Own);
        };
        let role_arn = self.role_arn(account_id);
        let credentials = self.role_credentials(&role_arn, external_id).await?;
        Ok(Identity::Role {
            role_arn,
            credentials,
        })
    }

    /// Drops cached credentials for a role, after S3 reported them expired.
    pub fn forget(&self, role_arn: &str, external_id: &str) {
        self.roles
            .forget(&(role_arn.to_owned(), external_id.to_owned()));
    }

    /// Calls STS AssumeRole, uncached. `external_id` of `None` sends none,
    /// which the activation check uses to prove the role requires one.
    pub async fn assume(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<Credentials, AssumeError> {
        let response = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("attache")
            .set_external_id(external_id.map(str::to_owned))
            .duration_seconds(self.args.aws_session_duration.as_secs().clamp(900, 43_200) as i32)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                let error = classify_sts_error(&error);
                let outcome = if matches!(error, AssumeError::Denied(_)) {
                    "denied"
                } else {
                    "error"
                };
                CREDENTIAL_REQUESTS
                    .with_label_values(&["aws", outcome])
                    .inc();
                return Err(error);
            }
        };
        CREDENTIAL_REQUESTS.with_label_values(&["aws", "ok"]).inc();
        let credentials = response
            .credentials()
            .ok_or_else(|| AssumeError::Unavailable("STS returned no credentials".to_owned()))?;
        let expiry = SystemTime::try_from(*credentials.expiration()).ok();
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            expiry,
            "attache-assume-role",
        ))
    }
}

/// Classifies an STS error by its code, falling back to the HTTP status
/// (moto's error bodies carry no code the SDK can parse).
fn classify_sts_error(
    error: &aws_sdk_sts::error::SdkError<
        aws_sdk_sts::operation::assume_role::AssumeRoleError,
        aws_sdk_sts::config::http::HttpResponse,
    >,
) -> AssumeError {
    use aws_sdk_sts::error::SdkError;
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            if code.contains("Throttl") || status == 429 || status >= 500 {
                return AssumeError::Unavailable(format!(
                    "STS is throttling or failing (HTTP {status} {code}): it will be retried"
                ));
            }
            let message = service.err().message().unwrap_or(code);
            AssumeError::Denied(format!(
                "STS rejected AssumeRole (HTTP {status}): {message}"
            ))
        }
        other => AssumeError::Unavailable(format!("STS could not be reached: {other}")),
    }
}
