//! Load tools behind `make bench` (`scripts/bench.py`).
//!
//! Each subcommand is one part of the benchmark that Python's standard
//! library is too slow for: the attachment source and the callback receiver
//! must outpace the fleet, and the task submitter must not be the limit.
//! `broker` measures RabbitMQ alone, `probe` the raw latency of one HTTP
//! request, and `pg-sample` profiles PostgreSQL sessions. Servers listen on 127.0.0.1 only and print their URL as one
//! JSON line on standard output; reports are JSON on standard output too.

mod broker;
mod pg_sample;
mod probe;
mod receiver;
mod signature;
mod source;
mod submit;

use std::net::Ipv4Addr;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load tools for Attaché's benchmark; every server listens on 127.0.0.1 only")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve generated attachment bytes over HTTP.
    Source(source::SourceArgs),
    /// Receive, verify and time signed task callbacks.
    Receiver(receiver::ReceiverArgs),
    /// Submit tasks to the producer's API and report the submission rate.
    Submit(submit::SubmitArgs),
    /// Measure RabbitMQ's publish-with-confirms plus consume rate on a quorum queue.
    Broker(broker::BrokerArgs),
    /// Sample what one database's sessions do until SIGTERM, then report.
    PgSample(pg_sample::PgSampleArgs),
    /// Time sequential requests to one URL on one keep-alive connection.
    Probe(probe::ProbeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Source(args) => source::run(args).await,
        Command::Receiver(args) => receiver::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Broker(args) => broker::run(args).await,
        Command::PgSample(args) => pg_sample::run(args).await,
        Command::Probe(args) => probe::run(args).await,
    }
}

/// Serves `app` on 127.0.0.1:`port` until SIGTERM or Ctrl-C. Port 0 lets
/// the kernel pick one; the URL is printed as `{"url": ...}` once bound.
async fn serve(app: axum::Router, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("failed to bind 127.0.0.1:{port}: pick a free port or 0"))?;
    let address = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "url": format!("http://{address}") })
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_requested())
        .await
        .context("the HTTP server failed")
}

/// Completes on SIGTERM or Ctrl-C.
async fn stop_requested() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a Unix process can always install a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Returns the wall-clock time in microseconds since the Unix epoch, the
/// unit that the submitter and the receiver share.
fn now_micros() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is set after 1970");
    since_epoch.as_micros() as u64
}
