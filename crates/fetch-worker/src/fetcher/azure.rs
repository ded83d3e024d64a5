//! Azure blobs, read with the Blob Storage REST API through the team's
//! access path: with a token for the tenant recorded when the team linked
//! Azure, or anonymously when it has not.
//!
//! A linked team's blobs are never read anonymously: a refused tenant
//! token fails the attachment with `azure_consent_missing`. Tenant tokens
//! are cached per tenant, one token request however many fetches wait.
//! Token requests and blob reads go through the egress pool, and the
//! member that carried the blob read is recorded. The body's MD5 is checked
//! against `Content-MD5` when the blob has one.

use std::sync::Arc;

use async_trait::async_trait;
use attache_azure::consent::READER_ROLE;
use attache_azure::storage::{Md5, Reader, classify_status, error_detail, expected_md5};
use attache_azure::{AccessToken, Azure, TokenError};
use attache_domain::{AttachmentRef, ErrorCode};
use futures_util::StreamExt;

use super::http::{classify_send_error, open_body};
use super::{FetchError, FetchRequest, Fetcher, ObjectStream, Opened};
use crate::access::AccessPath;

/// Fetches `AttachmentRef::AzureBlob` blobs.
pub struct AzureFetcher {
    azure: Arc<Azure>,
}

impl AzureFetcher {
    pub fn new(azure: Arc<Azure>) -> Self {
        Self { azure }
    }

    /// Returns the token of `access`, `None` for anonymous reads, and who
    /// the read runs as.
    async fn token<'a>(
        &'a self,
        access: &'a AccessPath,
    ) -> Result<(Option<AccessToken>, Reader<'a>), FetchError> {
        match access {
            AccessPath::AzureTenant { tenant } => {
                let token = self
                    .azure
                    .tenant_token(tenant)
                    .await
                    .map_err(|error| token_error(&self.azure, tenant, error))?;
                let reader = Reader::Tenant {
                    tenant,
                    client_id: self.azure.args().client_id(),
                };
                Ok((Some(token), reader))
            }
            AccessPath::Anonymous => Ok((None, Reader::Anonymous)),
            other => Err(FetchError::new(
                ErrorCode::UnsupportedScheme,
                format!(
                    "the Blob Storage fetcher cannot read with the {} access path",
                    other.as_str()
                ),
            )),
        }
    }

    async fn open_blob(
        &self,
        request: &FetchRequest<'_>,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Opened {
        let failed = |error| Opened {
            egress_member: None,
            object: Err(error),
        };
        let (token, reader) = match self.token(&request.access).await {
            Ok(found) => found,
            Err(error) => return failed(error),
        };
        let sent = match self
            .azure
            .get_blob(token.as_ref(), account, container, blob)
            .await
        {
            Ok(sent) => sent,
            Err(message) => return failed(FetchError::new(ErrorCode::InvalidUri, message)),
        };
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
            let expected = expected_md5(response.headers());
            open_body(response, request.max_bytes).map(|object| verify_md5(object, expected))
        } else {
            if let (401, Reader::Tenant { tenant, .. }) = (status.as_u16(), reader) {
                // A token revoked before its expiry is requested again on
                // the next attempt instead of being reused until it expires.
                self.azure.forget(tenant);
            }
            let detail = error_detail(response).await;
            let (code, message) =
                classify_status(status.as_u16(), reader, account, container, &detail);
            Err(FetchError::new(code, message))
        };
        Opened {
            egress_member: sent.member,
            object,
        }
    }
}

#[async_trait]
impl Fetcher for AzureFetcher {
    async fn open(&self, request: &FetchRequest<'_>) -> Opened {
        match request.reference {
            AttachmentRef::AzureBlob {
                account,
                container,
                blob,
            } => self.open_blob(request, account, container, blob).await,
            other => Opened {
                egress_member: None,
                object: Err(FetchError::new(
                    ErrorCode::UnsupportedScheme,
                    format!(
                        "the Blob Storage fetcher cannot fetch {} reference",
                        other.provider().name_with_article()
                    ),
                )),
            },
        }
    }
}

/// Wraps the body so that its MD5 is compared with `expected` at its end.
/// A mismatch ends the stream with a retryable `checksum_mismatch` error,
/// so the stored copy is discarded.
fn verify_md5(object: ObjectStream, expected: Option<[u8; 16]>) -> ObjectStream {
    let Some(expected) = expected else {
        return object;
    };
    let state = (object.body, Md5::default(), false);
    let body = futures_util::stream::unfold(state, move |(mut body, mut md5, done)| async move {
        if done {
            return None;
        }
        match body.next().await {
            Some(Ok(chunk)) => {
                md5.update(&chunk);
                Some((Ok(chunk), (body, md5, false)))
            }
            Some(Err(error)) => Some((Err(error), (body, md5, true))),
            None if md5.value() == expected => None,
            None => {
                let error = FetchError::new(
                    ErrorCode::ChecksumMismatch,
                    format!(
                        "the blob's bytes have MD5 {} but Blob Storage sent Content-MD5 {}; it will be retried",
                        hex::encode(md5.value()),
                        hex::encode(expected)
                    ),
                );
                Some((Err(error), (body, md5, true)))
            }
        }
    })
    .boxed();
    ObjectStream {
        content_type: object.content_type,
        body,
    }
}

/// Describes a failed tenant token request with what the customer must
/// change.
pub fn token_error(azure: &Azure, tenant: &str, error: TokenError) -> FetchError {
    match error {
        TokenError::Denied(detail) => FetchError::new(
            ErrorCode::AzureConsentMissing,
            format!(
                "{detail}: an administrator of tenant {tenant} must grant Attaché's application ({}) admin consent again, through POST /v1/integrations/azure/connect, and assign it the role {READER_ROLE}",
                azure.args().client_id()
            ),
        ),
        TokenError::Forbidden(detail) => FetchError::new(ErrorCode::DestinationForbidden, detail),
        TokenError::EgressUnavailable(detail) => {
            FetchError::new(ErrorCode::EgressUnavailable, detail)
        }
        TokenError::Unavailable(detail) => FetchError::new(ErrorCode::ServerError, detail),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn object(chunks: &[&'static [u8]]) -> ObjectStream {
        let chunks: Vec<Result<Bytes, FetchError>> = chunks
            .iter()
            .map(|chunk| Ok(Bytes::from_static(chunk)))
            .collect();
        ObjectStream {
            content_type: None,
            body: futures_util::stream::iter(chunks).boxed(),
        }
    }

    async fn collect(object: ObjectStream) -> Vec<Result<Bytes, FetchError>> {
        object.body.collect().await
    }

    fn md5_of(bytes: &[u8]) -> [u8; 16] {
        let mut md5 = Md5::default();
        md5.update(bytes);
        md5.value()
    }

    #[tokio::test]
    async fn matching_md5_passes_the_body_through() {
        let expected = md5_of(b"hello world");
        let items = collect(verify_md5(object(&[b"hello ", b"world"]), Some(expected))).await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn mismatching_md5_ends_with_a_retryable_error() {
        let expected = md5_of(b"something else");
        let items = collect(verify_md5(object(&[b"hello"]), Some(expected))).await;
        assert_eq!(items.len(), 2);
        let error = items[1].as_ref().unwrap_err();
        assert_eq!(error.code, ErrorCode::ChecksumMismatch);
        assert!(error.code.is_retryable());
    }
}
