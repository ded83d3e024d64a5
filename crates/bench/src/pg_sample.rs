//! A sampling profile of one database's sessions, for when
//! `pg_stat_statements` is not loaded.
//!
//! Every `interval_ms` it reads `pg_stat_activity` for the client backends
//! of `database` and counts each session by state, wait event and the
//! statement it runs. A count divided by the number of samples is the
//! average number of sessions in that state, so the largest counts show
//! where the database's time goes. `idle in transaction` means the session
//! waits for its client between two statements of an open transaction.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio_postgres::NoTls;

/// Rows kept in the report, largest first.
const ROWS_KEPT: usize = 25;

#[derive(Args)]
pub struct PgSampleArgs {
    /// PostgreSQL connection URL used for sampling.
    #[arg(long)]
    database_url: String,

    /// Name of the database whose sessions are sampled.
    #[arg(long)]
    database: String,

    /// Time between samples, in milliseconds.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
}

#[derive(Serialize)]
struct Row {
    state: String,
    wait: String,
    query: String,
    samples: u64,
    /// Average sessions in this row over the sampling window.
    average_sessions: f64,
}

#[derive(Serialize)]
struct Report {
    samples: u64,
    interval_ms: u64,
    rows: Vec<Row>,
}

pub async fn run(args: PgSampleArgs) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(&args.database_url, NoTls)
        .await
        .with_context(|| "failed to connect to PostgreSQL for sampling")?;
    tokio::spawn(connection);
    let statement = client
        .prepare(
            "SELECT state, coalesce(wait_event_type || ':' || wait_event, '') AS wait,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query
             FROM pg_stat_activity
             WHERE datname = $1 AND backend_type = 'client backend'
               AND pid <> pg_backend_pid()",
        )
        .await?;

    let mut counts: HashMap<(String, String, String), u64> = HashMap::new();
    let mut samples = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let stop = crate::stop_requested();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stop => break,
        }
        let rows = client.query(&statement, &[&args.database]).await?;
        samples += 1;
        for row in rows {
            let state: Option<String> = row.get("state");
            let state = state.unwrap_or_default();
            // An idle session's query is only the last one it ran.
            let query = if state == "idle" {
                String::new()
            } else {
                row.get("query")
            };
            *counts.entry((state, row.get("wait"), query)).or_default() += 1;
        }
    }

    let mut rows: Vec<Row> = counts
        .into_iter()
        .map(|((state, wait, query), count)| Row {
            state,
            wait,
            query,
            samples: count,
            average_sessions: count as f64 / samples.max(1) as f64,
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.samples));
    rows.truncate(ROWS_KEPT);
    let report = Report {
        samples,
        interval_ms: args.interval_ms,
        rows,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
