//! The task submitter: POSTs tasks whose attachments point at the bench
//! source, either as fast as `concurrency` requests in flight allow or on a
//! fixed schedule of `rate` tasks per second.
//!
//! Each task's metadata carries `bench_sent_us`, the wall-clock time just
//! before its request was sent, which the callback brings back to the
//! receiver. Requests are not retried: a failure is counted and reported,
//! so a benchmark never hides an error behind a retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Errors kept for the report. The rest are only counted.
const ERRORS_KEPT: usize = 5;

#[derive(Args, Clone)]
pub struct SubmitArgs {
    /// Base URL of the producer's API, such as http://127.0.0.1:8080.
    #[arg(long)]
    api_url: String,

    /// The team's API key, read from the environment so that it stays out
    /// of the process list.
    #[arg(long, env = "ATTACHE_BENCH_API_KEY", hide_env_values = true)]
    api_key: String,

    /// Base URL of the bench source.
    #[arg(long)]
    source_url: String,

    /// Base URL of the receiver's callbacks, such as
    /// http://127.0.0.1:9000/callbacks.
    #[arg(long)]
    callback_url: String,

    /// Number of tasks to submit.
    #[arg(long)]
    tasks: u64,

    /// Attachments in each task.
    #[arg(long, default_value_t = 5)]
    attachments_per_task: u64,

    /// Size of each attachment, in bytes.
    #[arg(long, default_value_t = 4096)]
    attachment_bytes: u64,

    /// Maximum requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,

    /// Tasks per second on a fixed schedule. Without it, requests follow
    /// each other as fast as the API responds.
    #[arg(long)]
    rate: Option<f64>,

    /// Text that makes this run's idempotency keys and URLs unique.
    #[arg(long)]
    run_id: String,
}

#[derive(Serialize)]
struct Report {
    accepted: u64,
    failed: u64,
    errors: Vec<String>,
    seconds: f64,
    /// Tasks accepted per second over the whole submission.
    rate: f64,
    api_latency_p50_ms: f64,
    api_latency_p99_ms: f64,
}

/// The result of one request: its duration, or the error.
type Sent = Result<Duration, String>;

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("failed to build the HTTP client")?;
    let args = Arc::new(args);
    let started = Instant::now();
    let results = match args.rate {
        Some(rate) => submit_on_schedule(&client, &args, rate).await,
        None => submit_as_fast_as_possible(&client, &args).await,
    };
    let seconds = started.elapsed().as_secs_f64();

    let mut durations: Vec<Duration> = results.iter().filter_map(|r| r.clone().ok()).collect();
    durations.sort();
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    let accepted = durations.len() as u64;
    let report = Report {
        accepted,
        failed: errors.len() as u64,
        errors: errors.into_iter().take(ERRORS_KEPT).collect(),
        seconds,
        rate: accepted as f64 / seconds,
        api_latency_p50_ms: percentile_ms(&durations, 0.50),
        api_latency_p99_ms: percentile_ms(&durations, 0.99),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `concurrency` loops that each send the next task as soon as the
/// response to their previous one arrives.
async fn submit_as_fast_as_possible(client: &reqwest::Client, args: &Arc<SubmitArgs>) -> Vec<Sent> {
    let next = Arc::new(AtomicU64::new(0));
    let mut loops = JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, args, next) = (client.clone(), args.clone(), next.clone());
        loops.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= args.tasks {
                    return sent;
                }
                sent.push(submit_one(&client, &args, index).await);
            }
        });
    }
    let mut results = Vec::new();
    while let Some(sent) = loops.join_next().await {
        results.extend(sent.expect("a submit loop does not panic"));
    }
    results
}

/// Starts task `i` at `i / rate` seconds, with at most `concurrency`
/// requests in flight. A task whose slot is not free yet starts late.
async fn submit_on_schedule(
    client: &reqwest::Client,
    args: &Arc<SubmitArgs>,
    rate: f64,
) -> Vec<Sent> {
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let start = tokio::time::Instant::now();
    let mut requests = JoinSet::new();
    for index in 0..args.tasks {
        tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate)).await;
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, args) = (client.clone(), args.clone());
        requests.spawn(async move {
            let sent = submit_one(&client, &args, index).await;
            drop(slot);
            sent
        });
    }
    let mut results = Vec::new();
    while let Some(sent) = requests.join_next().await {
        results.push(sent.expect("a submit request does not panic"));
    }
    results
}

async fn submit_one(client: &reqwest::Client, args: &SubmitArgs, index: u64) -> Sent {
    let run = &args.run_id;
    let attachments: Vec<_> = (0..args.attachments_per_task)
        .map(|position| {
            let uri = format!(
                "{}/bytes/{}/{run}/{index}-{position}",
                args.source_url, args.attachment_bytes
            );
            json!({ "uri": uri })
        })
        .collect();
    let sent_us = crate::now_micros();
    let body = json!({
        "callback_url": format!("{}/{run}-{index}", args.callback_url),
        "attachments": attachments,
        "metadata": { "bench_sent_us": sent_us },
    });
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/tasks", args.api_url))
        .bearer_auth(&args.api_key)
        .header("Idempotency-Key", format!("{run}-{index}"))
        .json(&body)
        .send()
        .await
        .map_err(|error| format!("task {index}: request failed: {error}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::ACCEPTED {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("task {index}: HTTP {status}, expected 202: {text}"));
    }
    Ok(started.elapsed())
}

/// Returns the nearest-rank percentile of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted[..1], 0.99), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
