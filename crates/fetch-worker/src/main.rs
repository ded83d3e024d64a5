//! `attache-fetch-worker`: consumes fetch jobs.

use attache_config::LogArgs;
use attache_fetch_worker::{FetchWorker, FetchWorkerConfig};
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "attache-fetch-worker",
    version,
    about = "Fetches Attaché attachments into the attachment store"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    config: FetchWorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    attache_telemetry::init_logging(cli.log.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(attache_telemetry::cancel_on_signal(shutdown.clone()));
    FetchWorker::bind(cli.config).await?.run(shutdown).await
}
