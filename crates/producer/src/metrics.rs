//! The producer's Prometheus metrics.

use std::sync::LazyLock;

use prometheus::{
    Gauge, IntCounter, IntCounterVec, IntGauge, register_gauge, register_int_counter,
    register_int_counter_vec, register_int_gauge,
};

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

/// Outbox rows due for publishing, sampled by the relay.
pub static OUTBOX_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "attache_outbox_backlog",
        "Outbox rows due for publishing, as last sampled by the relay."
    )
    .expect("metric names are unique and valid")
});

/// Time in seconds that the oldest due outbox row has waited.
pub static OUTBOX_OLDEST_AGE: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "attache_outbox_oldest_age_seconds",
        "Seconds the oldest due outbox row has waited, as last sampled by the relay."
    )
    .expect("metric names are unique and valid")
});
