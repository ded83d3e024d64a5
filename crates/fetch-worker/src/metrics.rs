//! The fetch-worker's Prometheus metrics. Labels are bounded: provider,
//! outcome and error code, never an id or URL.

use std::sync::LazyLock;

use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, exponential_buckets, register_histogram_vec,
    register_int_counter_vec, register_int_gauge,
};

/// Fetch jobs finished, by provider and outcome (`succeeded`, `retry`,
/// `failed`, `stale`, `postponed`) and error code (empty on success).
pub static FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_fetches_total",
        "Fetch jobs finished, by provider, outcome and error code.",
        &["provider", "outcome", "code"]
    )
    .expect("metric names are unique and valid")
});

/// Fetch duration, from request to stored object, by provider.
pub static FETCH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "attache_fetch_duration_seconds",
        "Time from a fetch's request to its stored object or error, by provider.",
        &["provider"],
        exponential_buckets(0.005, 2.5, 12).expect("bucket parameters are valid")
    )
    .expect("metric names are unique and valid")
});

/// Bytes stored, by provider.
pub static FETCH_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "attache_fetch_bytes_total",
        "Attachment bytes stored, by provider.",
        &["provider"]
    )
    .expect("metric names are unique and valid")
});

/// Fetches that hold a fetch slot, streaming from a source into the store.
pub static FETCHES_IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "attache_fetches_in_flight",
        "Fetches streaming from a source into the attachment store."
    )
    .expect("metric names are unique and valid")
});

/// Counts one fetch in [`FETCHES_IN_FLIGHT`] until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        FETCHES_IN_FLIGHT.inc();
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        FETCHES_IN_FLIGHT.dec();
    }
}
