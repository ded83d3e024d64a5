//! `attache-producer`: serves the task API and relays the outbox.

use attache_producer::cli::{Cli, Command};
use clap::CommandFactory;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = attache_config::parse_command_line(Cli::command());
    attache_telemetry::init_logging(cli.log.log_format);
    match cli.command {
        Command::Serve(config) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(attache_telemetry::cancel_on_signal(shutdown.clone()));
            attache_producer::Producer::bind(*config)
                .await?
                .run(shutdown)
                .await
        }
        Command::Migrate(database) => attache_producer::cli::migrate(&database).await,
        Command::Team(command) => attache_producer::cli::team(command).await,
        Command::Replay(command) => attache_producer::cli::replay(command).await,
    }
}
