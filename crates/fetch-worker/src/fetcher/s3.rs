//! `s3://` objects, read with the S3 API through the team's access path.
//!
//! Delegated teams' fetches assume the team's role (cached, one STS call
//! per role however many fetches wait); a failed AssumeRole fails the
//! attachment with `assume_role_denied` and never falls back to our own
//! identity. S3 traffic does not use the egress pool.

use std::sync::Arc;

use async_trait::async_trait;
use attache_aws::{AssumeError, Aws, Identity, S3Error};
use attache_domain::{AttachmentRef, ErrorCode};
use futures_util::StreamExt;

use super::{FetchError, FetchRequest, Fetcher, ObjectStream, Opened};
use crate::access::AccessPath;

/// Fetches `AttachmentRef::S3` objects.
pub struct S3Fetcher {
    aws: Arc<Aws>,
}

impl S3Fetcher {
    pub fn new(aws: Arc<Aws>) -> Self {
        Self { aws }
    }

    /// Resolves the identity of `access`, assuming the team's role if the
    /// team delegated access.
    async fn identity(&self, access: &AccessPath) -> Result<Identity, FetchError> {
        let delegation = match access {
            AccessPath::AwsRole {
                account_id,
                external_id,
            } => Some((account_id.as_str(), external_id.as_str())),
            _ => None,
        };
        self.aws
            .identity(delegation)
            .await
            .map_err(|error| assume_error(&self.aws, delegation, error))
    }

    async fn open_object(
        &self,
        request: &FetchRequest<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectStream, FetchError> {
        let mut identity = self.identity(&request.access).await?;
        let mut object = self
            .aws
            .get_object(&identity, bucket, key, request.bucket_owners)
            .await;
        // Credentials that expired mid-flight are renewed once.
        if let (
            Err(S3Error {
                code: ErrorCode::ExpiredCredentials,
                ..
            }),
            AccessPath::AwsRole {
                account_id,
                external_id,
            },
        ) = (&object, &request.access)
        {
            self.aws.forget(&self.aws.role_arn(account_id), external_id);
            identity = self.identity(&request.access).await?;
            object = self
                .aws
                .get_object(&identity, bucket, key, request.bucket_owners)
                .await;
        }
        let object = object.map_err(|error| FetchError::new(error.code, error.message))?;
        if let Some(length) = object
            .content_length
            .filter(|length| *length > request.max_bytes)
        {
            return Err(FetchError::too_large(length, request.max_bytes));
        }
        let body = futures_util::stream::unfold(object.body, |mut body| async move {
            let chunk = body.next().await?;
            Some((chunk.map_err(|error| classify_body_error(&error)), body))
        })
        .boxed();
        Ok(ObjectStream {
            content_type: object.content_type,
            body,
        })
    }
}

#[async_trait]
impl Fetcher for S3Fetcher {
    async fn open(&self, request: &FetchRequest<'_>) -> Opened {
        let object = match request.reference {
            AttachmentRef::S3 { bucket, key, .. } => self.open_object(request, bucket, key).await,
            other => Err(FetchError::new(
                ErrorCode::UnsupportedScheme,
                format!(
                    "the S3 fetcher cannot fetch {} reference",
                    other.provider().name_with_article()
                ),
            )),
        };
        Opened {
            egress_member: None,
            object,
        }
    }
}

/// Classifies a failure while streaming the body. The SDK fails the body
/// when the checksum S3 stored for the object does not match the bytes.
fn classify_body_error(error: &dyn std::error::Error) -> FetchError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.to_ascii_lowercase().contains("checksum") {
        return FetchError::new(
            ErrorCode::ChecksumMismatch,
            format!(
                "the object's bytes did not match the checksum S3 stored for it ({text}); it will be retried"
            ),
        );
    }
    FetchError::new(
        ErrorCode::ConnectionFailed,
        format!("the connection to S3 broke while the object was read ({text})"),
    )
}

/// Describes a failed AssumeRole with what the customer must change.
pub fn assume_error(aws: &Aws, delegation: Option<(&str, &str)>, error: AssumeError) -> FetchError {
    let role_arn = delegation
        .map(|(account_id, _)| aws.role_arn(account_id))
        .unwrap_or_default();
    match error {
        AssumeError::Denied(detail) => FetchError::new(
            ErrorCode::AssumeRoleDenied,
            format!(
                "could not assume {role_arn} with your team's External ID ({detail}): its trust policy must name {} and require the External ID that GET /v1/integrations/aws shows",
                aws.principal_arn()
            ),
        ),
        AssumeError::Unavailable(detail) => FetchError::new(ErrorCode::ServerError, detail),
    }
}
