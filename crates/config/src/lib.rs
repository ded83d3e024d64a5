//! Settings shared by every Attaché binary.
//!
//! Each binary flattens these groups into its own clap parser, so every
//! setting is a flag with an `ATTACHE_*` environment variable as fallback and
//! a default that suits a local run against the services on loopback.

use std::time::Duration;

use clap::{Args, ValueEnum};

/// PostgreSQL connection and pool settings.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "ATTACHE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/attache"
    )]
    pub database_url: String,

    /// Maximum number of connections in this process's pool.
    #[arg(long, env = "ATTACHE_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Maximum time a query waits for a free pooled connection before it fails.
    #[arg(long, env = "ATTACHE_DATABASE_WAIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_wait_timeout: Duration,
}

/// RabbitMQ connection and queue settings.
#[derive(Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL.
    #[arg(
        long,
        env = "ATTACHE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of every queue and exchange name, so several deployments or
    /// test runs can share one broker.
    #[arg(long, env = "ATTACHE_QUEUE_PREFIX", default_value = "attache")]
    pub queue_prefix: String,

    /// Maximum redeliveries of one message, after which RabbitMQ
    /// dead-letters it. Redeliveries after crashes count too, so a message
    /// that kills its worker cannot loop forever.
    #[arg(long, env = "ATTACHE_QUEUE_DELIVERY_LIMIT", default_value_t = 20)]
    pub queue_delivery_limit: u32,

    /// The broker's `consumer_timeout` (RabbitMQ's default is 30 minutes):
    /// a delivery left unacknowledged longer closes the worker's channel.
    /// Workers warn at start when a job could outlive it.
    #[arg(long, env = "ATTACHE_BROKER_CONSUMER_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub broker_consumer_timeout: Duration,
}

/// Logging settings.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log output format. Filter with `RUST_LOG`, for example `info` or
    /// `info,attache_queue=debug`.
    #[arg(long, env = "ATTACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parses a duration written as a number and a unit: `250ms`, `30s`, `5m`
/// or `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write it as 250ms, 30s, 5m or 2h"))?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("`{text}` does not start with a whole number: write 250ms, 30s, 5m or 2h")
    })?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!(
            "`{text}` has an unknown unit `{unit}`: use ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn parse_duration_rejects_malformed_input() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("whole number"));
    }
}
