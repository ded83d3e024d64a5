//! Replay: queue failed attachments and dead callbacks again.
//!
//! A replay resets the row to pending with a fresh attempt budget and retry
//! window, and queues a job with attempt 0, in one transaction. A replayed
//! callback keeps its id, so its webhook id stays the same and customers can
//! still discard a duplicate. A replayed attachment reopens its task; when
//! the task completes again, it sends a new callback, with a new webhook id,
//! because the content differs.

use attache_domain::{
    AttachmentId, CallbackId, CallbackJob, ErrorCode, FetchJob, JobMessage, TaskId, TeamId,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Result, Store};

/// Which rows to replay. Every field that is set must match.
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    pub team_id: Option<TeamId>,
    pub task_id: Option<TaskId>,
    /// Attachments only: the error code they failed with.
    pub error_code: Option<ErrorCode>,
    /// Rows that failed (attachments) or were last attempted (callbacks)
    /// at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Rows that failed or were last attempted before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// Queues failed attachments that match `filter` again; returns their
    /// ids.
    pub async fn replay_attachments(&self, filter: &ReplayFilter) -> Result<Vec<AttachmentId>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "UPDATE attachments a
                 SET status = 'pending', attempts = 0, error_code = NULL, error_message = NULL,
                     completed_at = NULL, retry_window_start = now(), replays = a.replays + 1,
                     updated_at = now()
                 FROM tasks t
                 WHERE t.id = a.task_id AND a.status = 'failed' AND t.status <> 'succeeded'
                   AND ($1::uuid IS NULL OR t.team_id = $1)
                   AND ($2::uuid IS NULL OR a.task_id = $2)
                   AND ($3::text IS NULL OR a.error_code = $3)
                   AND ($4::timestamptz IS NULL OR a.completed_at >= $4)
                   AND ($5::timestamptz IS NULL OR a.completed_at < $5)
                 RETURNING a.id, a.task_id",
                &[
                    &filter.team_id.map(|id| id.0),
                    &filter.task_id.map(|id| id.0),
                    &filter.error_code.map(ErrorCode::as_str),
                    &filter.since,
                    &filter.until,
                ],
            )
            .await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.get("id")).collect();
        let tasks: Vec<Uuid> = rows.iter().map(|row| row.get("task_id")).collect();
        tx.execute(
            "UPDATE tasks SET status = 'pending', completed_at = NULL WHERE id = ANY($1)",
            &[&tasks],
        )
        .await?;
        let jobs: Vec<FetchJob> = ids
            .iter()
            .map(|id| FetchJob {
                attachment_id: AttachmentId(*id),
                attempt: 0,
            })
            .collect();
        let jobs: Vec<serde_json::Value> = JobMessage::fetches(&jobs)
            .iter()
            .map(JobMessage::to_json)
            .collect();
        insert_jobs(&tx, "fetch", &jobs).await?;
        tx.commit().await?;
        Ok(ids.into_iter().map(AttachmentId).collect())
    }

    /// Queues dead callbacks that match `filter` again; returns their ids.
    /// `filter.error_code` must be unset: callbacks have no error code.
    pub async fn replay_callbacks(&self, filter: &ReplayFilter) -> Result<Vec<CallbackId>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "UPDATE callbacks c
                 SET status = 'pending', attempts = 0, last_status_code = NULL, last_error = NULL,
                     last_attempt_at = NULL, lease_until = NULL, retry_window_start = now(),
                     replays = c.replays + 1
                 FROM tasks t
                 WHERE t.id = c.task_id AND c.status = 'dead'
                   AND ($1::uuid IS NULL OR t.team_id = $1)
                   AND ($2::uuid IS NULL OR c.task_id = $2)
                   AND ($3::timestamptz IS NULL OR c.last_attempt_at >= $3)
                   AND ($4::timestamptz IS NULL OR c.last_attempt_at < $4)
                 RETURNING c.id",
                &[
                    &filter.team_id.map(|id| id.0),
                    &filter.task_id.map(|id| id.0),
                    &filter.since,
                    &filter.until,
                ],
            )
            .await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.get("id")).collect();
        let jobs: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                JobMessage::Callback(CallbackJob {
                    callback_id: CallbackId(*id),
                    attempt: 0,
                })
                .to_json()
            })
            .collect();
        insert_jobs(&tx, "callback", &jobs).await?;
        tx.commit().await?;
        Ok(ids.into_iter().map(CallbackId).collect())
    }
}

async fn insert_jobs(
    tx: &deadpool_postgres::Transaction<'_>,
    kind: &str,
    jobs: &[serde_json::Value],
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO outbox (kind, payload) SELECT $1, job FROM UNNEST($2::jsonb[]) AS j (job)",
        &[&kind, &jobs],
    )
    .await?;
    Ok(())
}
