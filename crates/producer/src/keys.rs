//! API keys and callback signing secrets.
//!
//! An API key is `att_` followed by 32 random bytes in unpadded URL-safe
//! base64. Only its SHA-256 is stored, and requests are matched by that hash.
//! A signing secret is `whsec_` followed by 32 random bytes in standard
//! base64, the form that Standard Webhooks libraries accept.

use attache_domain::TeamId;
use attache_store::teams::NewTeam;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

const API_KEY_PREFIX: &str = "att_";
/// Number of leading key characters stored in clear as `api_key_prefix`, so
/// operators can tell keys apart.
const SHOWN_PREFIX_LEN: usize = 12;

/// A new team's id, API key and signing secret, which the CLI prints once.
pub struct TeamCredentials {
    pub team_id: TeamId,
    pub api_key: String,
    pub signing_secret: String,
    api_key_hash: [u8; 32],
}

impl TeamCredentials {
    /// Generates fresh credentials from the operating system's random source.
    pub fn generate() -> Self {
        let api_key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes()));
        let signing_secret = format!("whsec_{}", STANDARD.encode(random_bytes()));
        Self {
            team_id: TeamId::new(),
            api_key_hash: hash_api_key(&api_key),
            api_key,
            signing_secret,
        }
    }

    /// Returns the row to insert for a team named `name`.
    pub fn new_team<'a>(&'a self, name: &'a str) -> NewTeam<'a> {
        NewTeam {
            id: self.team_id,
            name,
            api_key_hash: &self.api_key_hash,
            api_key_prefix: &self.api_key[..SHOWN_PREFIX_LEN],
            signing_secret: &self.signing_secret,
        }
    }
}

/// Returns the SHA-256 of an API key, as stored.
pub fn hash_api_key(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_match_documented_format() {
        let credentials = TeamCredentials::generate();
        assert!(credentials.api_key.starts_with("att_"));
        assert_eq!(credentials.api_key.len(), 4 + 43);
        let secret = credentials.signing_secret.strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(secret).unwrap().len(), 32);
        assert_eq!(credentials.api_key_hash, hash_api_key(&credentials.api_key));
    }

    #[test]
    fn generate_returns_distinct_credentials() {
        let first = TeamCredentials::generate();
        let second = TeamCredentials::generate();
        assert_ne!(first.api_key, second.api_key);
        assert_ne!(first.signing_secret, second.signing_secret);
    }
}
