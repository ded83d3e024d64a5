//! Fetchers: one per URI scheme, each opening an object as a byte stream.
//!
//! A fetcher only opens the object and classifies failures into error codes;
//! the handler streams the body into the attachment store, counting and
//! hashing it, so size limits and digests work the same for every provider.

mod azure;
mod gcs;
mod http;
mod s3;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use attache_domain::{AttachmentRef, ErrorCode, Provider, TeamId};
use attache_egress::Egress;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::access::AccessPath;

pub use azure::AzureFetcher;
pub use gcs::GcsFetcher;
pub use http::HttpFetcher;
pub use s3::S3Fetcher;

/// A classified fetch failure. The code decides retry or final; the message
/// is shown to the customer, so it never carries a signed query string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}", code = code.as_str())]
pub struct FetchError {
    pub code: ErrorCode,
    pub message: String,
}

impl FetchError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Creates the error for an object of at least `size` bytes, over `max_bytes`.
    pub fn too_large(size: u64, max_bytes: u64) -> Self {
        Self::new(
            ErrorCode::TooLarge,
            format!("the object is {size} bytes or more, over the limit of {max_bytes} bytes"),
        )
    }
}

/// The input of one fetch.
pub struct FetchRequest<'a> {
    pub reference: &'a AttachmentRef,
    pub team_id: TeamId,
    pub access: AccessPath,
    /// Objects announced larger than this fail before their body is read.
    pub max_bytes: u64,
    /// Accounts the team's S3 buckets may belong to; empty when the team
    /// registered none.
    pub bucket_owners: &'a [String],
}

/// An opened object.
pub struct ObjectStream {
    pub content_type: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

/// The result of opening an object, with the egress member that carried
/// the request (recorded for audit even when the request failed).
pub struct Opened {
    pub egress_member: Option<String>,
    pub object: Result<ObjectStream, FetchError>,
}

/// Opens objects of one provider.
#[async_trait]
pub trait Fetcher: Send + Sync {
    async fn open(&self, request: &FetchRequest<'_>) -> Opened;
}

/// The fetcher of each provider this deployment can fetch from.
pub struct Fetchers {
    by_provider: HashMap<Provider, Arc<dyn Fetcher>>,
}

impl Fetchers {
    /// The fetchers of a deployment whose plain HTTP goes through `egress`,
    /// with S3 when `aws` is configured, Cloud Storage when `gcp` is and
    /// Blob Storage when `azure` is.
    pub fn new(
        egress: Egress,
        aws: Option<Arc<attache_aws::Aws>>,
        gcp: Option<Arc<attache_gcp::Gcp>>,
        azure: Option<Arc<attache_azure::Azure>>,
    ) -> Self {
        let mut by_provider: HashMap<Provider, Arc<dyn Fetcher>> = HashMap::new();
        by_provider.insert(Provider::Http, Arc::new(HttpFetcher::new(egress)));
        if let Some(aws) = aws {
            by_provider.insert(Provider::S3, Arc::new(S3Fetcher::new(aws)));
        }
        if let Some(gcp) = gcp {
            by_provider.insert(Provider::Gcs, Arc::new(GcsFetcher::new(gcp)));
        }
        if let Some(azure) = azure {
            by_provider.insert(Provider::AzureBlob, Arc::new(AzureFetcher::new(azure)));
        }
        Self { by_provider }
    }

    /// Returns the fetcher for `provider`, if this deployment has one.
    pub fn get(&self, provider: Provider) -> Option<&Arc<dyn Fetcher>> {
        self.by_provider.get(&provider)
    }
}
