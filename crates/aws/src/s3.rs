//! S3 GetObject for one attachment.
//!
//! A bucket outside the configured region responds with a redirect naming
//! its region in `x-amz-bucket-region`; the request is sent once more in
//! that region, and the bucket's region is remembered. Checksum validation
//! is requested, so the SDK compares the object's stored checksum (when it
//! has one) with the streamed bytes and fails the body on a mismatch. When
//! the team registered bucket-owner accounts, every request carries S3's
//! expected-bucket-owner check, so a bucket owned by anyone else is
//! refused.

use std::collections::HashMap;
use std::sync::Mutex;

use attache_domain::ErrorCode;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumMode;

use crate::credentials::{Aws, Identity};

/// Clients cached at most, per identity and region.
const MAX_CLIENTS: usize = 1_000;

/// An opened object.
pub struct S3Object {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub body: ByteStream,
}

/// A classified S3 failure, shown to the customer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct S3Error {
    pub code: ErrorCode,
    pub message: String,
}

impl S3Error {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// S3 clients per identity and region, and the regions of buckets seen.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(String, String), aws_sdk_s3::Client>>,
    regions: Mutex<HashMap<String, String>>,
}

impl Aws {
    /// Opens `bucket`/`key` as `identity`. `expected_owners`, when not
    /// empty, lists the account IDs the bucket may belong to.
    pub async fn get_object(
        &self,
        identity: &Identity,
        bucket: &str,
        key: &str,
        expected_owners: &[String],
    ) -> Result<S3Object, S3Error> {
        let owners: Vec<Option<&str>> = if expected_owners.is_empty() {
            vec![None]
        } else {
            expected_owners
                .iter()
                .map(|owner| Some(owner.as_str()))
                .collect()
        };
        let mut last = None;
        for owner in owners {
            match self.get_in_region(identity, bucket, key, owner).await {
                Ok(object) => return Ok(object),
                // A bucket of another owner returns 403, so try the next owner.
                Err(error) if owner.is_some() && error.code == ErrorCode::AccessDenied => {
                    last = Some(error)
                }
                Err(error) => return Err(error),
            }
        }
        let error = last.expect("at least one owner was tried");
        Err(S3Error::new(
            ErrorCode::AccessDenied,
            format!(
                "{} If the bucket belongs to an account you did not register as a bucket owner, register it or use another bucket.",
                error.message
            ),
        ))
    }

    /// Sends GetObject in the bucket's known region, following one region
    /// redirect.
    async fn get_in_region(
        &self,
        identity: &Identity,
        bucket: &str,
        key: &str,
        owner: Option<&str>,
    ) -> Result<S3Object, S3Error> {
        let region = self.bucket_region(bucket);
        match self.send(identity, &region, bucket, key, owner).await {
            Ok(object) => Ok(object),
            Err(Failure::Redirect(actual)) if actual != region => {
                self.s3
                    .regions
                    .lock()
                    .expect("the region lock is never held across a panic")
                    .insert(bucket.to_owned(), actual.clone());
                match self.send(identity, &actual, bucket, key, owner).await {
                    Ok(object) => Ok(object),
                    Err(Failure::Redirect(_)) => Err(wrong_region(bucket, &actual)),
                    Err(Failure::Classified(error)) => Err(error),
                }
            }
            Err(Failure::Redirect(actual)) => Err(wrong_region(bucket, &actual)),
            Err(Failure::Classified(error)) => Err(error),
        }
    }

    async fn send(
        &self,
        identity: &Identity,
        region: &str,
        bucket: &str,
        key: &str,
        owner: Option<&str>,
    ) -> Result<S3Object, Failure> {
        let client = self.client(identity, region, bucket);
        let response = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_expected_bucket_owner(owner.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match response {
            Ok(output) => Ok(S3Object {
                content_type: output.content_type().map(str::to_owned),
                content_length: output
                    .content_length()
                    .and_then(|length| u64::try_from(length).ok()),
                body: output.body,
            }),
            Err(error) => Err(classify(&error, identity, bucket, key)),
        }
    }

    fn bucket_region(&self, bucket: &str) -> String {
        self.s3
            .regions
            .lock()
            .expect("the region lock is never held across a panic")
            .get(bucket)
            .cloned()
            .unwrap_or_else(|| self.args.aws_region.clone())
    }

    /// Returns a client for `identity` in `region`, building it once.
    fn client(&self, identity: &Identity, region: &str, bucket: &str) -> aws_sdk_s3::Client {
        let (name, provider) = match identity {
            Identity::Own => ("own".to_owned(), self.own.clone()),
            Identity::Role { credentials, .. } => (
                credentials.access_key_id().to_owned(),
                SharedCredentialsProvider::new(credentials.clone()),
            ),
        };
        // Dotted bucket names do not match S3's TLS certificate in
        // virtual-hosted style, and an endpoint override is a single host.
        let path_style = bucket.contains('.') || self.args.aws_s3_endpoint_url.is_some();
        let key = (format!("{name}/{path_style}"), region.to_owned());
        let mut clients = self
            .s3
            .clients
            .lock()
            .expect("the client lock is never held across a panic");
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(provider)
            .force_path_style(path_style);
        if let Some(endpoint) = &self.args.aws_s3_endpoint_url {
            config = config.endpoint_url(endpoint);
        }
        let client = aws_sdk_s3::Client::from_conf(config.build());
        clients.insert(key, client.clone());
        client
    }
}

/// The failure of one GetObject.
enum Failure {
    /// S3 named another region for the bucket.
    Redirect(String),
    Classified(S3Error),
}

fn wrong_region(bucket: &str, region: &str) -> S3Error {
    S3Error::new(
        ErrorCode::WrongRegion,
        format!(
            "bucket `{bucket}` did not answer in region {region} either; check the bucket's region"
        ),
    )
}

/// Classifies a GetObject error by its code, falling back to the status.
fn classify(
    error: &SdkError<GetObjectError, aws_sdk_s3::config::http::HttpResponse>,
    identity: &Identity,
    bucket: &str,
    key: &str,
) -> Failure {
    let service = match error {
        SdkError::ServiceError(service) => service,
        SdkError::TimeoutError(_) => {
            return Failure::Classified(S3Error::new(
                ErrorCode::Timeout,
                "S3 did not answer in time; it will be retried",
            ));
        }
        other => {
            return Failure::Classified(S3Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "could not reach S3 ({}); it will be retried",
                    error_chain(other)
                ),
            ));
        }
    };
    let raw = service.raw();
    let status = raw.status().as_u16();
    if let Some(region) = raw.headers().get("x-amz-bucket-region")
        && matches!(status, 301 | 307 | 400)
    {
        return Failure::Redirect(region.to_owned());
    }
    let code = service.err().code().unwrap_or_default();
    let object = format!("arn:aws:s3:::{bucket}/{key}");
    let classified = match (code, status) {
        ("NoSuchKey", _) | (_, 404) if code != "NoSuchBucket" => S3Error::new(
            ErrorCode::NotFound,
            format!("no object `{key}` in bucket `{bucket}`: check the key"),
        ),
        ("NoSuchBucket", _) => S3Error::new(
            ErrorCode::NotFound,
            format!("bucket `{bucket}` does not exist: check the bucket name"),
        ),
        ("ExpiredToken", _) => S3Error::new(
            ErrorCode::ExpiredCredentials,
            "the temporary credentials expired during the request; it will be retried with new ones",
        ),
        ("SlowDown", _) | (_, 429) | (_, 503) => S3Error::new(
            ErrorCode::Throttled,
            "S3 asked to slow down; it will be retried",
        ),
        (_, 500..=599) => S3Error::new(
            ErrorCode::ServerError,
            format!("S3 failed (HTTP {status}); it will be retried"),
        ),
        ("AccessDenied", _) | (_, 403) => access_denied(identity, &object),
        _ => S3Error::new(
            ErrorCode::UnexpectedStatus,
            format!("S3 refused GetObject on {object} (HTTP {status} {code})"),
        ),
    };
    Failure::Classified(classified)
}

fn access_denied(identity: &Identity, object: &str) -> S3Error {
    let message = match identity {
        Identity::Role { role_arn, .. } => format!(
            "the role {role_arn} was assumed but may not s3:GetObject on {object}: allow it in the role's permission policy, and kms:Decrypt on the key if the object is encrypted with a customer-managed KMS key"
        ),
        Identity::Own => format!(
            "Attaché's own AWS identity may not s3:GetObject on {object}: grant our account read access in the bucket policy, or set up delegated access"
        ),
    };
    S3Error::new(ErrorCode::AccessDenied, message)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
