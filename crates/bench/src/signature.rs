//! Verification of Standard Webhooks signatures in the form the
//! callback-worker signs them: `webhook-signature` contains space-separated
//! `v1,<base64>` entries, each an HMAC-SHA256 of
//! `{webhook-id}.{webhook-timestamp}.{body}` keyed with the base64 bytes
//! after `whsec_` in the team's secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Maximum difference between the signed timestamp and the receiver's
/// clock, as in the Python `standardwebhooks` package (1.3.0).
const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The reason a request failed verification.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a whole number of seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is more than five minutes from this clock")]
    StaleTimestamp,
    #[error("no v1 signature in webhook-signature matches the body")]
    NoMatchingSignature,
}

/// A receiver's key for one team's secret.
pub struct Verifier {
    key: Vec<u8>,
}

impl Verifier {
    /// Decodes a `whsec_<base64>` secret.
    pub fn from_secret(secret: &str) -> anyhow::Result<Self> {
        let encoded = secret
            .strip_prefix("whsec_")
            .ok_or_else(|| anyhow::anyhow!("the signing secret must start with `whsec_`"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|error| anyhow::anyhow!("the signing secret is not valid base64: {error}"))?;
        Ok(Self { key })
    }

    /// Checks one request's headers and body against the key, at `now`
    /// seconds since the Unix epoch.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signatures: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejection> {
        let id = id.ok_or(Rejection::MissingHeader("webhook-id"))?;
        let timestamp = timestamp.ok_or(Rejection::MissingHeader("webhook-timestamp"))?;
        let signatures = signatures.ok_or(Rejection::MissingHeader("webhook-signature"))?;
        let seconds: i64 = timestamp.parse().map_err(|_| Rejection::InvalidTimestamp)?;
        if (now - seconds).abs() > TOLERANCE_SECONDS {
            return Err(Rejection::StaleTimestamp);
        }

        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let matches = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            // verify_slice compares in constant time.
            .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
        if matches {
            Ok(())
        } else {
            Err(Rejection::NoMatchingSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's example, also used by the callback-worker's signing test.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verify(signatures: &str, body: &[u8], now: i64) -> Result<(), Rejection> {
        let verifier = Verifier::from_secret(SECRET).unwrap();
        let timestamp = TIMESTAMP.to_string();
        verifier.verify(Some(ID), Some(&timestamp), Some(signatures), body, now)
    }

    #[test]
    fn specification_example_verifies() {
        assert_eq!(verify(SIGNATURE, BODY, TIMESTAMP), Ok(()));
        let several = format!("v1,bm90IGl0 {SIGNATURE}");
        assert_eq!(verify(&several, BODY, TIMESTAMP + 10), Ok(()));
    }

    #[test]
    fn changed_body_is_rejected() {
        let changed = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(SIGNATURE, changed, TIMESTAMP),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn old_timestamp_is_rejected() {
        assert_eq!(
            verify(SIGNATURE, BODY, TIMESTAMP + TOLERANCE_SECONDS + 1),
            Err(Rejection::StaleTimestamp)
        );
    }

    #[test]
    fn missing_header_is_named() {
        let verifier = Verifier::from_secret(SECRET).unwrap();
        let rejected = verifier.verify(Some(ID), None, Some(SIGNATURE), BODY, TIMESTAMP);
        assert_eq!(rejected, Err(Rejection::MissingHeader("webhook-timestamp")));
    }
}
