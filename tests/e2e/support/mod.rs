//! The test harness: a whole Attaché deployment per test, with loopback
//! file sources and callback receivers.

pub mod aws;
pub mod azure;
mod env;
mod forward;
pub mod gcp;
pub mod logs;
mod receiver;
mod source;

pub use env::{Deployment, Options, TestDatabase};
pub use receiver::{ReceivedCallback, Receiver};
pub use source::{Source, SourceFile};

use std::time::Duration;

/// Polls `probe` every 50 ms until it returns `Some`, and returns that value.
/// Panics with "timed out waiting for {condition}" once `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, condition: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {condition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns the lowercase hex SHA-256 digest of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
