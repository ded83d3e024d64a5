//! Credential metrics, labelled by provider (`aws`, `gcp`).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

/// Requests to a credential service, by outcome (`ok`, `denied`, `error`).
pub static CREDENTIAL_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_credential_requests_total",
        "Requests to a credential service (such as STS AssumeRole or IAM Credentials generateAccessToken), by provider and outcome.",
        &["provider", "outcome"]
    )
    .expect("metric names are unique and valid")
});

/// Credential cache lookups, by result (`hit` or `miss`).
pub static CREDENTIAL_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_credential_cache_total",
        "Credential cache lookups, by provider and result (hit or miss).",
        &["provider", "result"]
    )
    .expect("metric names are unique and valid")
});
