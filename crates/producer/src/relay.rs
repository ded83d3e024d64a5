//! The outbox relay: moves due outbox rows to RabbitMQ.
//!
//! Each round deletes up to a batch of due rows with `SKIP LOCKED` in one
//! transaction, publishes them, waits for every confirm and commits, so a
//! failed publish rolls the deletion back. A full batch starts the next round at once. Otherwise the relay
//! sleeps until it is woken or the poll interval passes, whichever comes
//! first. The API wakes it in-process after accepting a task, and the
//! outbox trigger wakes it (LISTEN/NOTIFY) when a fetch-worker queues a
//! callback; other rows (retries, which are due later) wait for the poll.
//! Polling also means that a lost notification only delays a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use attache_queue::{PublishError, Publisher, QueueKind, Topology};
use attache_store::{Store, StoreError, outbox};
use clap::Args;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{JOBS_PUBLISHED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE};

/// Minimum time between two samples of the outbox backlog, because each
/// sample counts the due rows.
const BACKLOG_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Relay settings.
#[derive(Args, Clone, Debug)]
pub struct RelaySettings {
    /// Outbox rows published per transaction.
    #[arg(long, env = "ATTACHE_RELAY_BATCH_SIZE", default_value_t = 200)]
    pub relay_batch_size: i64,

    /// Maximum wait between outbox polls when no notification arrives.
    #[arg(long, env = "ATTACHE_RELAY_POLL_INTERVAL", default_value = "1s", value_parser = attache_config::parse_duration)]
    pub relay_poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Relays until `shutdown` fires. `ready` is true while a confirmed channel
/// to the broker is open.
pub async fn run(
    store: Store,
    amqp_url: String,
    topology: Topology,
    settings: RelaySettings,
    ready: Arc<AtomicBool>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let listener = tokio::spawn(listen(
        store.database_url().to_owned(),
        wake.clone(),
        shutdown.clone(),
    ));

    while let Some(connection) =
        attache_queue::connect(&amqp_url, "attache-producer relay", &shutdown).await
    {
        let publisher = match Publisher::open(&connection, topology.clone()).await {
            Ok(publisher) => publisher,
            Err(error) => {
                tracing::warn!(%error, "failed to open a publishing channel, reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        ready.store(true, Ordering::Relaxed);
        let lost = relay_rounds(&store, &publisher, &settings, &wake, &shutdown).await;
        ready.store(false, Ordering::Relaxed);
        let _ = connection.close(200, "relay stopping".into()).await;
        if !lost {
            break;
        }
    }
    listener.abort();
    tracing::info!("outbox relay stopped");
}

/// Runs relay rounds until shutdown or a publishing failure. Returns `true`
/// after a publishing failure, so the caller reconnects, and `false` after
/// shutdown.
async fn relay_rounds(
    store: &Store,
    publisher: &Publisher,
    settings: &RelaySettings,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> bool {
    let mut next_sample = tokio::time::Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        if tokio::time::Instant::now() >= next_sample {
            sample_backlog(store).await;
            next_sample = tokio::time::Instant::now() + BACKLOG_SAMPLE_INTERVAL;
        }
        match relay_round(store, publisher, settings.relay_batch_size).await {
            Ok(published) if published as i64 == settings.relay_batch_size => continue,
            Ok(_) => {}
            Err(RoundError::Publish(error)) => {
                tracing::warn!(%error, "publishing failed, the batch stays in the outbox");
                return true;
            }
            Err(RoundError::Store(error)) => {
                tracing::warn!(%error, "outbox query failed, retrying");
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(settings.relay_poll_interval) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// Takes, publishes and deletes one batch of due rows. Returns the number
/// of rows published.
async fn relay_round(
    store: &Store,
    publisher: &Publisher,
    limit: i64,
) -> Result<usize, RoundError> {
    let kinds: Vec<&str> = QueueKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let mut connection = store.connection().await?;
    let tx = connection.transaction().await.map_err(StoreError::from)?;
    let rows = outbox::take(&tx, &kinds, limit).await?;
    if rows.is_empty() {
        return Ok(0);
    }

    let messages: Vec<(QueueKind, Vec<u8>)> = rows
        .iter()
        .map(|row| {
            let kind =
                QueueKind::parse(&row.kind).expect("take returns only the kinds it was given");
            (kind, row.payload.to_string().into_bytes())
        })
        .collect();
    publisher.publish_batch(&messages).await?;
    tx.commit().await.map_err(StoreError::from)?;

    for (kind, _) in &messages {
        JOBS_PUBLISHED.with_label_values(&[kind.as_str()]).inc();
    }
    tracing::debug!(published = rows.len(), "published outbox batch");
    Ok(rows.len())
}

/// Updates the backlog gauges. A failure is logged and leaves them stale.
async fn sample_backlog(store: &Store) {
    let sampled = async {
        let connection = store.connection().await?;
        outbox::backlog(&connection).await
    };
    match sampled.await {
        Ok((due, age)) => {
            OUTBOX_BACKLOG.set(due);
            OUTBOX_OLDEST_AGE.set(age);
        }
        Err(error) => tracing::warn!(%error, "failed to sample the outbox backlog"),
    }
}

/// Keeps a LISTEN connection open, reconnecting after losses.
async fn listen(database_url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            result = outbox::listen(&database_url, wake.clone()) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "outbox notifications lost, polling until reconnected");
                }
            }
            () = shutdown.cancelled() => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
