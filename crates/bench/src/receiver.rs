//! A loopback callback receiver that verifies every signature and records
//! when each task's callback arrived.
//!
//! - `POST /callbacks/{name}` verifies one callback, records it and
//!   responds 204, or 400 when the signature does not verify.
//! - `POST /probe` does the same verification without recording, so a load
//!   generator can measure the raw POST latency of equal work.
//! - `GET /stats` returns the counts, `GET /records` every recorded
//!   callback, and `POST /reset` clears both between benchmark phases.
//!
//! The submitter puts its send time in the task's metadata as
//! `bench_sent_us`, which the callback carries back, so the latency of a
//! task is the receive time minus that field. Both run on one machine and
//! read the same wall clock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde::Serialize;

use crate::signature::Verifier;

#[derive(Args)]
pub struct ReceiverArgs {
    /// TCP port on 127.0.0.1, or 0 to let the kernel pick one.
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// The team's signing secret (`whsec_...`), read from the environment
    /// so that it stays out of the process list.
    #[arg(long, env = "ATTACHE_BENCH_SIGNING_SECRET", hide_env_values = true)]
    signing_secret: String,
}

/// One verified callback.
#[derive(Clone, Serialize)]
struct Record {
    task_id: String,
    /// The task's `status` in the callback, such as `succeeded`.
    status: String,
    /// The submitter's send time from the metadata, if present.
    sent_us: Option<u64>,
    received_us: u64,
}

struct Receiver {
    verifier: Verifier,
    records: Mutex<Vec<Record>>,
    rejected: AtomicU64,
    probes: AtomicU64,
}

#[derive(Serialize)]
struct Stats {
    callbacks: usize,
    unique_tasks: usize,
    not_succeeded: usize,
    rejected: u64,
    probes: u64,
    first_received_us: Option<u64>,
    last_received_us: Option<u64>,
}

pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let receiver = Arc::new(Receiver {
        verifier: Verifier::from_secret(&args.signing_secret)?,
        records: Mutex::default(),
        rejected: AtomicU64::new(0),
        probes: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/callbacks/{*name}", post(receive_callback))
        .route("/probe", post(receive_probe))
        .route("/stats", get(stats))
        .route("/records", get(records))
        .route("/reset", post(reset))
        .with_state(receiver);
    crate::serve(app, args.port).await
}

impl Receiver {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let now_seconds = (crate::now_micros() / 1_000_000) as i64;
        let verified = self.verifier.verify(
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            body,
            now_seconds,
        );
        if verified.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        verified.is_ok()
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records
            .lock()
            .expect("no code panics while holding the records lock")
    }
}

async fn receive_callback(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received_us = crate::now_micros();
    if !receiver.verify(&headers, &body) {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        receiver.rejected.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let data = &payload["data"];
    let record = Record {
        task_id: data["task_id"].as_str().unwrap_or_default().to_owned(),
        status: data["status"].as_str().unwrap_or_default().to_owned(),
        sent_us: data["metadata"]["bench_sent_us"].as_u64(),
        received_us,
    };
    receiver.lock_records().push(record);
    StatusCode::NO_CONTENT
}

async fn receive_probe(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    receiver.probes.fetch_add(1, Ordering::Relaxed);
    if receiver.verify(&headers, &body) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn stats(State(receiver): State<Arc<Receiver>>) -> Json<Stats> {
    let records = receiver.lock_records();
    let unique: HashSet<&str> = records
        .iter()
        .map(|record| record.task_id.as_str())
        .collect();
    Json(Stats {
        callbacks: records.len(),
        unique_tasks: unique.len(),
        not_succeeded: records.iter().filter(|r| r.status != "succeeded").count(),
        rejected: receiver.rejected.load(Ordering::Relaxed),
        probes: receiver.probes.load(Ordering::Relaxed),
        first_received_us: records.iter().map(|record| record.received_us).min(),
        last_received_us: records.iter().map(|record| record.received_us).max(),
    })
}

async fn records(State(receiver): State<Arc<Receiver>>) -> Json<Vec<Record>> {
    Json(receiver.lock_records().clone())
}

async fn reset(State(receiver): State<Arc<Receiver>>) -> StatusCode {
    receiver.lock_records().clear();
    receiver.rejected.store(0, Ordering::Relaxed);
    receiver.probes.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}
