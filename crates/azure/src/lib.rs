//! Azure access for Attaché: the two ways a team's Blob Storage URLs are
//! read, and the admin-consent flow that links a team to its tenant.
//!
//! - Service principal: we are a multi-tenant Azure application. A team's
//!   administrator grants it admin consent in the team's tenant, and the
//!   tenant recorded at that moment is the only one we request tokens for
//!   on the team's behalf (client credentials, scope
//!   `https://storage.azure.com/.default`). A tenant named by a storage
//!   account or an authentication challenge is never used, because another
//!   customer could then point us at a storage account that trusts our
//!   application in their tenant.
//! - Anonymous: a team that has not linked Azure reads public containers
//!   without credentials. Once a team links Azure, its blob URLs are read
//!   only with the tenant token.
//!
//! [`consent`] builds the admin-consent URL and its single-use `state`;
//! [`token`] requests tenant tokens and caches them per tenant (one token
//! request per tenant however many fetches wait); [`storage`] reads blobs
//! and classifies Blob Storage statuses. Token requests and blob reads both
//! go through the egress pool and its destination guard.
//!
//! Metrics: `attache_credential_requests_total{provider="azure",outcome}`
//! and `attache_credential_cache_total{provider="azure",result}`.

pub mod consent;
pub mod storage;
pub mod token;

use clap::Args;
use url::Url;

pub use token::{AccessToken, Azure, TokenError};

/// The Microsoft identity platform host of Azure's public cloud.
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The Blob Storage endpoint of an account in Azure's public cloud.
const DEFAULT_BLOB_ENDPOINT: &str = "https://{account}.blob.core.windows.net";

/// Azure settings; Blob Storage is enabled when `azure_client_id` is set.
#[derive(Args, Clone, Debug)]
pub struct AzureArgs {
    /// The application (client) ID of our multi-tenant Azure application.
    /// Setting it enables Azure Blob Storage attachments.
    #[arg(long, env = "ATTACHE_AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// A client secret of our Azure application, used to request tokens in
    /// the tenants that consented.
    #[arg(long, env = "ATTACHE_AZURE_CLIENT_SECRET", hide_env_values = true)]
    pub azure_client_secret: Option<String>,

    /// Base URL of the Microsoft identity platform, the host of the
    /// admin-consent page and of each tenant's token endpoint.
    #[arg(long, env = "ATTACHE_AZURE_AUTHORITY", default_value = DEFAULT_AUTHORITY)]
    pub azure_authority: Url,

    /// Public URL of the producer's consent redirect endpoint
    /// (`/v1/integrations/azure/consent`), registered as a redirect URI of
    /// the application. The connect route needs it.
    #[arg(long, env = "ATTACHE_AZURE_REDIRECT_URL")]
    pub azure_redirect_url: Option<Url>,

    /// Base URL of a storage account's Blob Storage endpoint, with
    /// `{account}` standing for the account name. Emulators use a path
    /// style, such as `http://127.0.0.1:10000/{account}` for Azurite.
    #[arg(long, env = "ATTACHE_AZURE_BLOB_ENDPOINT_TEMPLATE", default_value = DEFAULT_BLOB_ENDPOINT)]
    pub azure_blob_endpoint_template: String,
}

impl Default for AzureArgs {
    fn default() -> Self {
        Self {
            azure_client_id: None,
            azure_client_secret: None,
            azure_authority: Url::parse(DEFAULT_AUTHORITY)
                .expect("the default authority is a valid URL"),
            azure_redirect_url: None,
            azure_blob_endpoint_template: DEFAULT_BLOB_ENDPOINT.to_owned(),
        }
    }
}

impl AzureArgs {
    /// Tells whether Azure Blob Storage attachments are enabled.
    pub fn enabled(&self) -> bool {
        self.azure_client_id.is_some()
    }

    /// Returns the application (client) ID, empty when Azure is not enabled.
    pub fn client_id(&self) -> &str {
        self.azure_client_id.as_deref().unwrap_or_default()
    }
}
