//! The outbox relay: moves due outbox rows to RabbitMQ.
//!
//! Each round deletes up to a batch of due rows with `SKIP LOCKED` in one
//! transaction, publishes their jobs, with the fetch jobs of several rows
//! in shared messages, waits for every confirm and commits, so a failed
//! publish rolls the deletion back. A full batch starts the next round at once. Otherwise the relay
//! sleeps until it is woken or the poll interval passes, whichever comes
//! first. The API wakes it in-process after accepting a task, and the
//! outbox trigger wakes it (LISTEN/NOTIFY) when a fetch-worker queues a
//! callback; other rows (retries, which are due later) wait for the poll.
//! Polling also means that a lost notification only delays a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use attache_domain::JobMessage;
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

    let messages = pack(&rows);
    publisher.publish_batch(&messages).await?;
    tx.commit().await.map_err(StoreError::from)?;

    for row in &rows {
        JOBS_PUBLISHED.with_label_values(&[row.kind.as_str()]).inc();
    }
    tracing::debug!(
        rows = rows.len(),
        messages = messages.len(),
        "published outbox batch"
    );
    Ok(rows.len())
}

/// Returns the messages that carry the jobs of `rows`, with their queues.
/// The fetch jobs of several rows share messages (see [`JobMessage::pack`]),
/// which saves the broker and the workers a message per row. A row whose
/// payload does not decode is published as it is, for its queue's worker
/// to dead-letter.
fn pack(rows: &[outbox::OutboxRow]) -> Vec<(QueueKind, Vec<u8>)> {
    let mut messages = Vec::with_capacity(rows.len());
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = QueueKind::parse(&row.kind).expect("take returns only the kinds it was given");
        match JobMessage::from_json(&row.payload) {
            Ok(job) => jobs.push(job),
            Err(error) => {
                tracing::error!(%error, outbox_id = row.id, "an outbox row does not decode; publishing it unchanged");
                messages.push((kind, row.payload.to_string().into_bytes()));
            }
        }
    }
    for job in JobMessage::pack(jobs) {
        let kind = match job {
            JobMessage::Fetch(_) | JobMessage::FetchGroup(_) => QueueKind::Fetch,
            JobMessage::Callback(_) => QueueKind::Callback,
        };
        messages.push((kind, job.encode()));
    }
    messages
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

#[cfg(test)]
mod tests {
    use attache_domain::{AttachmentId, CallbackId, CallbackJob, FetchGroupJob, FetchJob};

    use super::*;

    fn row(id: i64, kind: &str, payload: serde_json::Value) -> outbox::OutboxRow {
        outbox::OutboxRow {
            id,
            kind: kind.to_owned(),
            payload,
        }
    }

    fn decoded(messages: &[(QueueKind, Vec<u8>)]) -> Vec<(QueueKind, JobMessage)> {
        messages
            .iter()
            .map(|(kind, body)| (*kind, JobMessage::decode(body).unwrap()))
            .collect()
    }

    #[test]
    fn pack_shares_messages_between_rows() {
        let jobs: Vec<FetchJob> = (0..7)
            .map(|_| FetchJob {
                attachment_id: AttachmentId::new(),
                attempt: 0,
            })
            .collect();
        let callback = JobMessage::Callback(CallbackJob {
            callback_id: CallbackId::new(),
            attempt: 0,
        });
        let rows = [
            row(1, "fetch", JobMessage::fetches(&jobs[..3])[0].to_json()),
            row(2, "callback", callback.to_json()),
            row(3, "fetch", JobMessage::Fetch(jobs[3]).to_json()),
            row(4, "fetch", JobMessage::fetches(&jobs[4..])[0].to_json()),
        ];
        assert_eq!(
            decoded(&pack(&rows)),
            vec![
                (QueueKind::Callback, callback),
                (
                    QueueKind::Fetch,
                    JobMessage::FetchGroup(FetchGroupJob { jobs })
                ),
            ]
        );
    }

    #[test]
    fn pack_passes_undecodable_row_unchanged() {
        let payload = serde_json::json!({"version": 99, "type": "fetch"});
        let messages = pack(&[row(1, "fetch", payload.clone())]);
        assert_eq!(
            messages,
            vec![(QueueKind::Fetch, payload.to_string().into_bytes())]
        );
    }
}
