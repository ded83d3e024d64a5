//! The callback-worker's Prometheus metrics.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, exponential_buckets, register_histogram_vec,
    register_int_counter_vec,
};

/// Delivery attempts, by outcome: `delivered`, `retry`, `dead`, `stale`,
/// or `postponed` (held back by the per-host limit, no attempt spent).
pub static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_callback_attempts_total",
        "Callback delivery attempts, by outcome.",
        &["outcome"]
    )
    .expect("metric names are unique and valid")
});

/// Time from sending a callback to its answer or failure.
pub static ATTEMPT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "attache_callback_duration_seconds",
        "Time from sending a callback to its answer or failure, by outcome.",
        &["outcome"],
        exponential_buckets(0.005, 2.5, 12).expect("bucket parameters are valid")
    )
    .expect("metric names are unique and valid")
});
