//! `gs://` objects, read with the Cloud Storage JSON API with the identity
//! of the team's access path.
//!
//! Impersonating teams' fetches mint a token for the team's service account
//! (cached, one `generateAccessToken` call per account however many
//! fetches wait); a failed impersonation fails the attachment with
//! `impersonation_denied` and never falls back to our own token. Both the
//! token request and the object request go through the egress pool; the
//! member that carried the object request is recorded. The body's CRC32C
//! is checked against the `x-goog-hash` that Cloud Storage sends.

use std::sync::Arc;

use async_trait::async_trait;
use attache_domain::{AttachmentRef, ErrorCode};
use attache_gcp::integration::TOKEN_CREATOR_ROLE;
use attache_gcp::storage::{Crc32c, Reader, classify_status, error_detail, expected_crc32c};
use attache_gcp::{AccessToken, Gcp, TokenError};
use futures_util::StreamExt;

use super::http::{classify_send_error, open_body};
use super::{FetchError, FetchRequest, Fetcher, ObjectStream, Opened};
use crate::access::AccessPath;

/// Fetches `AttachmentRef::Gcs` objects.
pub struct GcsFetcher {
    gcp: Arc<Gcp>,
}

impl GcsFetcher {
    pub fn new(gcp: Arc<Gcp>) -> Self {
        Self { gcp }
    }

    /// Returns the token of `access` and who it reads as.
    async fn token<'a>(
        &'a self,
        access: &'a AccessPath,
    ) -> Result<(AccessToken, Reader<'a>), FetchError> {
        match access {
            AccessPath::GcpImpersonated { service_account } => {
                let token = self
                    .gcp
                    .impersonated_token(service_account)
                    .await
                    .map_err(|error| token_error(&self.gcp, service_account, error))?;
                Ok((token, Reader::Impersonated(service_account)))
            }
            AccessPath::GcpOwn => {
                let ours = self.gcp.service_account();
                let token = self
                    .gcp
                    .own_token()
                    .await
                    .map_err(|error| token_error(&self.gcp, ours, error))?;
                Ok((token, Reader::Own(ours)))
            }
            other => Err(FetchError::new(
                ErrorCode::UnsupportedScheme,
                format!(
                    "the Cloud Storage fetcher cannot read with the {} access path",
                    other.as_str()
                ),
            )),
        }
    }

    async fn open_object(&self, request: &FetchRequest<'_>, bucket: &str, object: &str) -> Opened {
        let (token, reader) = match self.token(&request.access).await {
            Ok(found) => found,
            Err(error) => {
                return Opened {
                    egress_member: None,
                    object: Err(error),
                };
            }
        };
        let sent = self.gcp.get_object(&token, bucket, object).await;
        let response = match sent.result {
            Ok(response) => response,
            Err(error) => {
                return Opened {
                    egress_member: sent.member,
                    object: Err(classify_send_error(error)),
                };
            }
        };
        let status = response.status();
        let object = if status.is_success() {
            let expected = expected_crc32c(response.headers());
            open_body(response, request.max_bytes).map(|object| verify_crc32c(object, expected))
        } else {
            if let (401, Reader::Impersonated(service_account)) = (status.as_u16(), reader) {
                // A token revoked before its expiry is minted again on the
                // next attempt instead of being reused until it expires.
                self.gcp.forget(service_account);
            }
            let detail = error_detail(response).await;
            let (code, message) = classify_status(status.as_u16(), reader, bucket, &detail);
            Err(FetchError::new(code, message))
        };
        Opened {
            egress_member: sent.member,
            object,
        }
    }
}

#[async_trait]
impl Fetcher for GcsFetcher {
    async fn open(&self, request: &FetchRequest<'_>) -> Opened {
        match request.reference {
            AttachmentRef::Gcs { bucket, object } => {
                self.open_object(request, bucket, object).await
            }
            other => Opened {
                egress_member: None,
                object: Err(FetchError::new(
                    ErrorCode::UnsupportedScheme,
                    format!(
                        "the Cloud Storage fetcher cannot fetch {} reference",
                        other.provider().name_with_article()
                    ),
                )),
            },
        }
    }
}

/// Wraps the body so that its CRC32C is compared with `expected` at its
/// end. A mismatch ends the stream with a retryable `checksum_mismatch`
/// error, so the stored copy is discarded.
fn verify_crc32c(object: ObjectStream, expected: Option<u32>) -> ObjectStream {
    let Some(expected) = expected else {
        return object;
    };
    let state = (object.body, Crc32c::default(), false);
    let body = futures_util::stream::unfold(state, move |(mut body, mut crc, done)| async move {
        if done {
            return None;
        }
        match body.next().await {
            Some(Ok(chunk)) => {
                crc.update(&chunk);
                Some((Ok(chunk), (body, crc, false)))
            }
            Some(Err(error)) => Some((Err(error), (body, crc, true))),
            None if crc.value() == expected => None,
            None => {
                let error = FetchError::new(
                    ErrorCode::ChecksumMismatch,
                    format!(
                        "the object's bytes have CRC32C {:08x} but Cloud Storage sent {expected:08x}; it will be retried",
                        crc.value()
                    ),
                );
                Some((Err(error), (body, crc, true)))
            }
        }
    })
    .boxed();
    ObjectStream {
        content_type: object.content_type,
        body,
    }
}

/// Describes a failed impersonation with what the customer must change.
pub fn token_error(gcp: &Gcp, service_account: &str, error: TokenError) -> FetchError {
    match error {
        TokenError::Denied(detail) => FetchError::new(
            ErrorCode::ImpersonationDenied,
            format!(
                "could not impersonate {service_account} ({detail}): grant {} the role Service Account Token Creator ({TOKEN_CREATOR_ROLE}) on {service_account}",
                gcp.service_account()
            ),
        ),
        TokenError::Forbidden(detail) => FetchError::new(ErrorCode::DestinationForbidden, detail),
        TokenError::EgressUnavailable(detail) => {
            FetchError::new(ErrorCode::EgressUnavailable, detail)
        }
        TokenError::Unavailable(detail) => FetchError::new(ErrorCode::ServerError, detail),
    }
}
