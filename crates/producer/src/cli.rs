//! The command line: `serve`, `migrate` and `team create`.

use attache_config::{DatabaseArgs, LogArgs};
use attache_store::Store;
use clap::{Args, Parser, Subcommand};

use crate::ProducerConfig;
use crate::keys::TeamCredentials;

#[derive(Parser, Debug)]
#[command(
    name = "attache-producer",
    version,
    about = "Attaché's task API and outbox relay"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the task API and relay queued jobs to RabbitMQ.
    Serve(Box<ProducerConfig>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage teams.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Queue failed attachments or dead callbacks again.
    Replay(ReplayCommand),
}

/// Which rows `replay` queues again. Every filter that is given must match.
#[derive(Args, Debug)]
pub struct ReplayCommand {
    /// `attachments` (failed ones) or `callbacks` (dead ones).
    #[arg(value_parser = ["attachments", "callbacks"])]
    pub kind: String,
    /// Only this team's rows.
    #[arg(long)]
    pub team: Option<attache_domain::TeamId>,
    /// Only this task's rows.
    #[arg(long)]
    pub task: Option<attache_domain::TaskId>,
    /// Attachments only: the error code they failed with, such as access_denied.
    #[arg(long)]
    pub error_code: Option<attache_domain::ErrorCode>,
    /// Rows that failed or were last attempted at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows that failed or were last attempted before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Subcommand, Debug)]
pub enum TeamCommand {
    /// Create a team and print its API key and callback signing secret.
    /// They are printed only once, and only a hash of the key is stored.
    Create(CreateTeam),
}

#[derive(Args, Debug)]
pub struct CreateTeam {
    /// The team's display name.
    #[arg(long)]
    pub name: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Applies pending database migrations.
pub async fn migrate(database: &DatabaseArgs) -> anyhow::Result<()> {
    Store::open(database).await?;
    Ok(())
}

/// Runs a `team` subcommand.
pub async fn team(command: TeamCommand) -> anyhow::Result<()> {
    let TeamCommand::Create(create) = command;
    let name = create.name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 200,
        "--name must be 1 to 200 characters"
    );
    let store = Store::open(&create.database).await?;
    let credentials = TeamCredentials::generate();
    store.create_team(credentials.new_team(name)).await?;

    if create.json {
        let json = serde_json::json!({
            "team_id": credentials.team_id,
            "name": name,
            "api_key": credentials.api_key,
            "signing_secret": credentials.signing_secret,
        });
        println!("{json}");
    } else {
        println!("team id:         {}", credentials.team_id);
        println!("API key:         {}", credentials.api_key);
        println!("signing secret:  {}", credentials.signing_secret);
        println!("Store both now: they are not shown again.");
    }
    Ok(())
}

/// Runs `replay` and prints how many rows were queued again.
pub async fn replay(command: ReplayCommand) -> anyhow::Result<()> {
    anyhow::ensure!(
        command.kind == "attachments" || command.error_code.is_none(),
        "--error-code filters attachments only: remove it to replay callbacks"
    );
    let store = Store::open(&command.database).await?;
    let filter = attache_store::replay::ReplayFilter {
        team_id: command.team,
        task_id: command.task,
        error_code: command.error_code,
        since: command.since,
        until: command.until,
    };
    let replayed = if command.kind == "attachments" {
        store.replay_attachments(&filter).await?.len()
    } else {
        store.replay_callbacks(&filter).await?.len()
    };
    println!("queued {replayed} {} again", command.kind);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn log_format_follows_serve() {
        let cli = Cli::try_parse_from(["attache-producer", "serve", "--log-format", "json"])
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(cli.log.log_format, attache_config::LogFormat::Json);
        assert!(matches!(cli.command, Command::Serve(_)));
    }
}
