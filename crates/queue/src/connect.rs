//! Connecting to RabbitMQ, with retries and back-off.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// Connects to `url`, retrying every failure with back-off from 250 ms to
/// 5 s, so a worker started before the broker, or cut off from it, comes
/// back within seconds. Returns `None` if `shutdown` fires first.
pub async fn connect(url: &str, name: &str, shutdown: &CancellationToken) -> Option<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let attempt = || Connection::connect(url, properties.clone());
    let retrying = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(250))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .with_jitter(),
        )
        .notify(|error, delay| {
            tracing::warn!(%error, retry_in = ?delay, "failed to connect to RabbitMQ at ATTACHE_AMQP_URL, retrying");
        });
    tokio::select! {
        connection = retrying => connection.ok(),
        () = shutdown.cancelled() => None,
    }
}
