//! `attache-fetch-worker`: consumes fetch jobs.

use attache_config::LogArgs;
use attache_fetch_worker::{FetchWorker, FetchWorkerConfig};
use clap::{CommandFactory, Parser};
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
    // The Azure settings are shared with the producer, and only its consent
    // route reads the redirect URL, so the fetch-worker's help leaves it out.
    let command = Cli::command().mut_arg("azure_redirect_url", |arg| arg.hide(true));
    let cli: Cli = attache_config::parse_command_line(command);
    attache_telemetry::init_logging(cli.log.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(attache_telemetry::cancel_on_signal(shutdown.clone()));
    FetchWorker::bind(cli.config).await?.run(shutdown).await
}
