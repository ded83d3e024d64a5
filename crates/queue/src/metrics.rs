//! Consumer metrics, labelled by job kind (`fetch` or `callback`).

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

/// Deliveries received.
pub static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_jobs_consumed_total",
        "Deliveries received from a work queue, by job kind.",
        &["queue"]
    )
    .expect("metric names are unique and valid")
});

/// Deliveries whose handler is running.
pub static IN_FLIGHT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "attache_jobs_in_flight",
        "Deliveries being handled, by job kind.",
        &["queue"]
    )
    .expect("metric names are unique and valid")
});

/// Deliveries returned to their queue because our own infrastructure, such
/// as the database, failed.
pub static REQUEUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_jobs_requeued_total",
        "Deliveries returned to their queue after an infrastructure failure, by job kind.",
        &["queue"]
    )
    .expect("metric names are unique and valid")
});

/// Deliveries rejected to the dead-letter queue, by reason.
pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_jobs_dead_lettered_total",
        "Deliveries rejected to the dead-letter queue, by job kind and reason.",
        &["queue", "reason"]
    )
    .expect("metric names are unique and valid")
});
