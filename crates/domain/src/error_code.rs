//! Stable error codes recorded on attachments and shown to customers.
//!
//! The code alone decides whether a failed attempt is retried: see
//! [`ErrorCode::is_retryable`]. Customers read these codes in callbacks and
//! in `GET /v1/tasks/{id}`, so a code, once published, keeps its meaning.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => ($text:literal, $retryable:literal)),+ $(,)?) => {
        /// A stable, customer-facing error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant),+
        }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),+];

            /// Returns the code as stored and published.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// Tells whether another attempt may succeed without anyone
            /// changing anything: timeouts, connection errors, throttling and
            /// server errors. Every other code is final at once.
            pub fn is_retryable(self) -> bool {
                match self {
                    $(Self::$variant => $retryable),+
                }
            }
        }

        impl FromStr for ErrorCode {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown error code `{other}`")),
                }
            }
        }
    };
}

error_codes! {
    /// The URI is malformed or names no object.
    InvalidUri => ("invalid_uri", false),
    /// The URI's scheme is not one Attaché fetches.
    UnsupportedScheme => ("unsupported_scheme", false),
    /// The object does not exist (HTTP 404 or 410, or the provider's
    /// equivalent).
    NotFound => ("not_found", false),
    /// The object is larger than the configured maximum size.
    TooLarge => ("too_large", false),
    /// The source refused access (HTTP 401 or 403, or the provider's
    /// equivalent).
    AccessDenied => ("access_denied", false),
    /// The destination resolves to an address Attaché never connects to.
    DestinationForbidden => ("destination_forbidden", false),
    /// The source answered with a status that no retry will change, such as
    /// 400 or 405.
    UnexpectedStatus => ("unexpected_status", false),
    /// Too many redirects, or a redirect that downgrades https to http.
    RedirectRejected => ("redirect_rejected", false),
    /// Connecting or reading timed out.
    Timeout => ("timeout", true),
    /// The connection could not be made or broke off.
    ConnectionFailed => ("connection_failed", true),
    /// The source asked us to slow down (HTTP 429 or the provider's
    /// equivalent).
    Throttled => ("throttled", true),
    /// The source failed with a server error (HTTP 5xx).
    ServerError => ("server_error", true),
    /// The body's checksum did not match the one the source sent.
    ChecksumMismatch => ("checksum_mismatch", true),
    /// No egress address was available to carry the request.
    EgressUnavailable => ("egress_unavailable", true),
    /// Writing to Attaché's own attachment store failed.
    StorageFailed => ("storage_failed", true),
    /// Attaché's workers failed to process the job several times in a row
    /// (crashes or timeouts), so it was given up.
    ProcessingFailed => ("processing_failed", false),
    /// The team's role could not be assumed: its trust policy does not name
    /// Attaché's account with the team's External ID.
    AssumeRoleDenied => ("assume_role_denied", false),
    /// The bucket is in another region than the one it was asked in, even
    /// after one retry in the region S3 named.
    WrongRegion => ("wrong_region", false),
    /// Temporary credentials expired during the request.
    ExpiredCredentials => ("expired_credentials", true),
    /// The team's Google Cloud service account could not be impersonated:
    /// Attaché's service account lacks Service Account Token Creator on it,
    /// or it does not exist.
    ImpersonationDenied => ("impersonation_denied", false),
    /// An Azure blob could not be read anonymously and the team has not
    /// linked Azure, so no tenant token may be used for it.
    AzureNotLinked => ("azure_not_linked", false),
    /// The team's Azure tenant refused a token for Attaché's application:
    /// consent was never given there or the application was removed.
    AzureConsentMissing => ("azure_consent_missing", false),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_text() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
        }
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        let retryable: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|code| code.is_retryable())
            .map(|code| code.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "timeout",
                "connection_failed",
                "throttled",
                "server_error",
                "checksum_mismatch",
                "egress_unavailable",
                "storage_failed",
                "expired_credentials",
            ]
        );
    }
}
