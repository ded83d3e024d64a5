//! A bearer access token, as OAuth 2.0 services such as Google's IAM
//! Credentials and Microsoft's identity platform issue them.

use std::fmt;
use std::time::SystemTime;

use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::cache::Expiring;

/// An access token. Its `Debug` output hides the token.
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    /// `None` for a static token, which never expires as far as we know.
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<hidden>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Expiring for AccessToken {
    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl AccessToken {
    /// Builds the `Authorization` header carrying this token, marked
    /// sensitive so HTTP clients leave it out of their debug output.
    pub fn authorization(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", self.token)) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let token = AccessToken {
            token: "secret-token-value".to_owned(),
            expires_at: None,
        };
        assert!(!format!("{token:?}").contains("secret-token-value"));
        assert_eq!(
            token.authorization()[AUTHORIZATION],
            "Bearer secret-token-value"
        );
    }
}
