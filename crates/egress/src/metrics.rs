//! Egress metrics. The member label is the member's configured name, so its
//! values are bounded by the configuration.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

/// Requests sent through each member.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_egress_requests_total",
        "Requests sent through each egress member.",
        &["member"]
    )
    .expect("metric names are unique and valid")
});

/// Requests that failed because of the member itself.
pub static FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_egress_failures_total",
        "Requests that failed because the egress member itself was unusable.",
        &["member"]
    )
    .expect("metric names are unique and valid")
});

/// Requests in flight through each member.
pub static IN_FLIGHT: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "attache_egress_in_flight",
        "Requests in flight through each egress member.",
        &["member"]
    )
    .expect("metric names are unique and valid")
});

/// 1 while a member is healthy, 0 while it is skipped.
pub static HEALTHY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "attache_egress_member_healthy",
        "1 while an egress member is in use, 0 while it is skipped as unhealthy.",
        &["member"]
    )
    .expect("metric names are unique and valid")
});

/// Requests the destination guard denied, by address class.
pub static DENIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_egress_denied_total",
        "Outbound requests the destination guard denied, by address class.",
        &["class"]
    )
    .expect("metric names are unique and valid")
});
