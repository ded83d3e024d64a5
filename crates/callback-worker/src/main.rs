//! `attache-callback-worker`: consumes callback jobs.

use attache_callback_worker::{CallbackWorker, CallbackWorkerConfig};
use attache_config::LogArgs;
use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "attache-callback-worker",
    version,
    about = "Delivers Attaché's signed task callbacks"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    config: CallbackWorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = attache_config::parse_command_line(Cli::command());
    attache_telemetry::init_logging(cli.log.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(attache_telemetry::cancel_on_signal(shutdown.clone()));
    CallbackWorker::bind(cli.config).await?.run(shutdown).await
}
