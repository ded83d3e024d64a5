//! Standard Webhooks signatures.
//!
//! Every callback carries `webhook-id` (stable across retries, so customers
//! can discard duplicates), `webhook-timestamp` (seconds since the epoch, new
//! on each attempt) and `webhook-signature`: `v1,` followed by the base64
//! HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with the bytes of the
//! team's secret (`whsec_` followed by base64). Any Standard Webhooks
//! library verifies it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// A team's secret is not in the `whsec_<base64>` form.
#[derive(Debug, thiserror::Error)]
#[error("the team's signing secret is not `whsec_` followed by base64")]
pub struct InvalidSecret;

/// The key callbacks are signed with.
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Decodes a `whsec_` secret.
    pub fn from_secret(secret: &str) -> Result<Self, InvalidSecret> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
        if bytes.is_empty() {
            return Err(InvalidSecret);
        }
        Ok(Self(bytes))
    }

    /// Returns the `webhook-signature` header value for one attempt.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_specification_example() {
        // The example published with the Standard Webhooks specification.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = key.sign("msg_1", 100, b"{}");
        assert_ne!(base, key.sign("msg_2", 100, b"{}"));
        assert_ne!(base, key.sign("msg_1", 101, b"{}"));
        assert_ne!(base, key.sign("msg_1", 100, b"{ }"));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for secret in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
        ] {
            assert!(SigningKey::from_secret(secret).is_err(), "{secret:?}");
        }
    }
}
