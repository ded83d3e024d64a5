//! Jobs waiting to be published to RabbitMQ.
//!
//! The relay deletes due rows, skipping rows locked with `FOR UPDATE SKIP
//! LOCKED`, inside a transaction, publishes them, waits for the broker's
//! confirms and commits. Replicas skip each other's claimed rows, so under normal
//! operation no row is published twice. A relay that dies between publishing
//! and committing leaves its rows to be published again. The duplicate jobs
//! change nothing, because workers skip or discard a job whose attempt
//! number no longer matches its row.

use std::sync::Arc;

use deadpool_postgres::Transaction;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::Result;

/// The PostgreSQL `NOTIFY` channel of the outbox insert trigger.
pub const CHANNEL: &str = "attache_outbox";

/// An outbox row that is due for publishing.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    /// `fetch` or `callback`: which work queue the job goes to.
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Takes up to `limit` due rows of the given kinds, oldest first, skipping
/// rows that another relay holds: they are deleted within `tx` and returned
/// in id order. Committing `tx` after publishing makes the deletion final;
/// ending it any other way puts the rows back.
pub async fn take(tx: &Transaction<'_>, kinds: &[&str], limit: i64) -> Result<Vec<OutboxRow>> {
    let rows = crate::cached::query(
        tx,
        "DELETE FROM outbox WHERE id IN (
             SELECT id FROM outbox
             WHERE available_at <= now() AND kind = ANY($1)
             ORDER BY available_at, id
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, payload",
        &[&kinds, &limit],
    )
    .await?;
    let mut rows: Vec<OutboxRow> = rows
        .iter()
        .map(|row| OutboxRow {
            id: row.get("id"),
            kind: row.get("kind"),
            payload: row.get("payload"),
        })
        .collect();
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

/// Returns the number of rows due now and the age in seconds of the oldest.
pub async fn backlog(client: &impl deadpool_postgres::GenericClient) -> Result<(i64, f64)> {
    let row = crate::cached::query_one(
        client,
        "SELECT count(*) AS due,
                    COALESCE(EXTRACT(EPOCH FROM now() - min(available_at))::float8, 0) AS age
             FROM outbox WHERE available_at <= now()",
        &[],
    )
    .await?;
    Ok((row.get("due"), row.get("age")))
}

/// Opens a dedicated connection that listens on [`CHANNEL`] and wakes
/// `notify` on every notification. It needs its own connection because a
/// pooled one does not expose notifications. Returns when the connection
/// ends, so the caller can reconnect.
pub async fn listen(database_url: &str, notify: Arc<Notify>) -> Result<()> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // Notifications arrive only while the connection is polled, so the
    // pump and the LISTEN command run together.
    let pump = async {
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(_) = message? {
                notify.notify_one();
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let subscribe = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        std::future::pending::<Result<(), tokio_postgres::Error>>().await
    };
    tokio::select! {
        result = pump => result?,
        result = subscribe => result?,
    }
    Ok(())
}
