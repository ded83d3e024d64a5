//! The admin-consent flow that links a team to its Azure tenant.
//!
//! The connect route stores the SHA-256 of a random `state` with the team
//! and an expiry, and sends the team's administrator to the admin-consent
//! URL. Microsoft redirects the browser back with `tenant`, `admin_consent`
//! and that `state`. The redirect handler consumes the state (single use),
//! and the team it names is the only team the tenant is recorded for. Only
//! the hash is stored, so a database reader cannot complete a consent.

use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use url::Url;

use crate::AzureArgs;

/// How long a consent `state` stays valid after the connect request.
pub const STATE_TTL: Duration = Duration::from_secs(30 * 60);
/// The only scope we ask consent for: read blobs with the roles the
/// customer assigns to our service principal.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The built-in role the customer assigns to our application on the storage
/// accounts or containers it may read.
pub const READER_ROLE: &str = "Storage Blob Data Reader";
/// Random bytes in a `state`: 256 bits, too many to guess.
const STATE_BYTES: usize = 32;
/// Maximum length of a tenant accepted from the redirect, in bytes.
const MAX_TENANT_LEN: usize = 253;

/// Generates a consent `state`: 32 random bytes, base64url without padding.
pub fn generate_state() -> String {
    let mut bytes = [0u8; STATE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Returns the SHA-256 of a `state`, which is what the store contains.
pub fn hash_state(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// Builds the admin-consent URL for `state`, or `None` when the redirect
/// URL is not configured.
pub fn consent_url(args: &AzureArgs, state: &str) -> Option<Url> {
    let redirect = args.azure_redirect_url.as_ref()?;
    let mut url = args.azure_authority.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["organizations", "v2.0", "adminconsent"]);
    url.query_pairs_mut()
        .append_pair("client_id", args.client_id())
        .append_pair("scope", STORAGE_SCOPE)
        .append_pair("redirect_uri", redirect.as_str())
        .append_pair("state", state);
    Some(url)
}

/// Checks a tenant from the consent redirect: a tenant ID (a GUID) or a
/// verified domain name, as ASCII letters, digits, `-` and `.`. The
/// multi-tenant aliases `common`, `organizations` and `consumers` are
/// rejected, because a token for them is not bound to the team's tenant.
pub fn valid_tenant(tenant: &str) -> bool {
    let aliases = ["common", "organizations", "consumers"];
    !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && !aliases.contains(&tenant.to_ascii_lowercase().as_str())
        && !tenant.starts_with(['.', '-'])
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_random_and_hashed() {
        let first = generate_state();
        let second = generate_state();
        assert_ne!(first, second);
        assert_eq!(first.len(), 43);
        assert_eq!(hash_state(&first), hash_state(&first));
        assert_ne!(hash_state(&first), hash_state(&second));
    }

    #[test]
    fn consent_url_names_the_app_scope_and_redirect() {
        let args = AzureArgs {
            azure_client_id: Some("app-id".to_owned()),
            azure_redirect_url: Some(
                Url::parse("https://attache.example/v1/integrations/azure/consent").unwrap(),
            ),
            ..AzureArgs::default()
        };
        let url = consent_url(&args, "st").unwrap();
        assert_eq!(
            url.as_str(),
            "https://login.microsoftonline.com/organizations/v2.0/adminconsent?client_id=app-id&scope=https%3A%2F%2Fstorage.azure.com%2F.default&redirect_uri=https%3A%2F%2Fattache.example%2Fv1%2Fintegrations%2Fazure%2Fconsent&state=st"
        );
        let unconfigured = AzureArgs {
            azure_redirect_url: None,
            ..args
        };
        assert_eq!(consent_url(&unconfigured, "st"), None);
    }

    #[test]
    fn tenants_are_ids_or_domains() {
        assert!(valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(valid_tenant("contoso.onmicrosoft.com"));
        for bad in [
            "",
            "common",
            "Organizations",
            "consumers",
            "a/b",
            "../x",
            "a?b",
            "é",
            ".x",
        ] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
