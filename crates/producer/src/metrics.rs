//! The producer's Prometheus metrics.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, register_int_counter, register_int_counter_vec};

/// Tasks accepted by the API (idempotent replays excluded).
pub static TASKS_ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("attache_tasks_accepted_total", "Tasks accepted by the API.")
        .expect("metric names are unique and valid")
});

/// Requests the API rejected, by error code.
pub static REQUESTS_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_api_requests_rejected_total",
        "API requests rejected, by error code.",
        &["code"]
    )
    .expect("metric names are unique and valid")
});

/// Jobs the relay published with a broker confirm, by queue kind.
pub static JOBS_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_outbox_published_total",
        "Jobs published from the outbox and confirmed by RabbitMQ, by job kind.",
        &["kind"]
    )
    .expect("metric names are unique and valid")
});
