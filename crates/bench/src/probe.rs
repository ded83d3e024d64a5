//! The latency probe: sends requests one after another on one keep-alive
//! connection and reports the percentiles of their round trips.
//!
//! It uses reqwest, the HTTP client the fetch-worker and the
//! callback-worker send with, so its numbers are the floor for one GET of
//! an attachment or one POST of a callback. Every request is timed; a
//! response other than 2xx fails the probe.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::submit::percentile_ms;

#[derive(Args)]
pub struct ProbeArgs {
    /// URL to request.
    #[arg(long)]
    url: String,

    /// How long to keep sending, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,

    /// File whose bytes are POSTed; without it, each request is a GET.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,

    /// Request header as `Name: value`; repeat for more.
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    requests: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .context("failed to build the HTTP client")?;
    let headers = parse_headers(&args.headers)?;
    let body = match &args.body_file {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?,
        ),
        None => None,
    };

    let mut durations = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    while Instant::now() < deadline {
        let request = match &body {
            Some(body) => client.post(&args.url).body(body.clone()),
            None => client.get(&args.url),
        };
        let started = Instant::now();
        let response = request.headers(headers.clone()).send().await?;
        let status = response.status();
        response.bytes().await?;
        durations.push(started.elapsed());
        if !status.is_success() {
            bail!("{} returned HTTP {status}, expected 2xx", args.url);
        }
    }

    durations.sort();
    let report = Report {
        requests: durations.len(),
        p50_ms: percentile_ms(&durations, 0.50),
        p95_ms: percentile_ms(&durations, 0.95),
        p99_ms: percentile_ms(&durations, 0.99),
        max_ms: durations
            .last()
            .map_or(0.0, |max| max.as_secs_f64() * 1000.0),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn parse_headers(lines: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("header `{line}` is not `Name: value`");
        };
        headers.insert(
            HeaderName::try_from(name.trim())?,
            HeaderValue::try_from(value.trim())?,
        );
    }
    Ok(headers)
}
