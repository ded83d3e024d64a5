//! Accepting tasks and reading them back.
//!
//! A task, its attachments and one outbox row per attachment are written in
//! one transaction, so every task accepted with 202 has its jobs queued. A
//! unique index on the team and idempotency key rejects duplicates. A
//! concurrent duplicate waits for the first insert to commit and then reads
//! the existing task.

use attache_domain::{AttachmentId, FetchJob, JobMessage, Provider, TaskId, TeamId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{Result, Store, parse_column};

/// A validated task, ready to insert.
pub struct NewTask {
    pub id: TaskId,
    pub team_id: TeamId,
    pub callback_url: String,
    pub metadata: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub request_hash: Vec<u8>,
    pub attachments: Vec<NewAttachment>,
}

/// One attachment of a new task.
pub struct NewAttachment {
    pub id: AttachmentId,
    pub uri: String,
    pub provider: Provider,
}

/// The outcome of [`Store::insert_task`].
pub enum Inserted {
    /// The task is new and committed.
    Created,
    /// The team already has a task with this idempotency key, and nothing
    /// was written. Compare the request hashes to tell a retry from a
    /// conflicting reuse of the key.
    Existing {
        task_id: TaskId,
        request_hash: Vec<u8>,
    },
}

/// A task as shown by the API and sent in its callback.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub task_id: TaskId,
    pub status: attache_domain::TaskStatus,
    pub callback_url: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attachments: Vec<AttachmentView>,
}

/// One attachment's outcome, in submission order.
#[derive(Clone, Debug, Serialize)]
pub struct AttachmentView {
    pub attachment_id: AttachmentId,
    pub uri: String,
    pub status: attache_domain::AttachmentStatus,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub content_type: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

impl Store {
    /// Inserts a task, its attachments and their fetch jobs in one
    /// transaction, unless the team already used the idempotency key.
    pub async fn insert_task(&self, task: &NewTask) -> Result<Inserted> {
        let client = self.pool.get().await?;
        let ids: Vec<Uuid> = task.attachments.iter().map(|a| a.id.0).collect();
        let positions: Vec<i32> = (0..task.attachments.len() as i32).collect();
        let uris: Vec<&str> = task.attachments.iter().map(|a| a.uri.as_str()).collect();
        let providers: Vec<&str> = task
            .attachments
            .iter()
            .map(|a| a.provider.as_str())
            .collect();
        let jobs: Vec<FetchJob> = task
            .attachments
            .iter()
            .map(|a| FetchJob {
                attachment_id: a.id,
                attempt: 0,
            })
            .collect();
        let jobs: Vec<serde_json::Value> = JobMessage::fetches(task.id, &jobs)
            .iter()
            .map(JobMessage::to_json)
            .collect();

        // One statement is one transaction and one round trip. The
        // attachments and jobs are written only when the task row is.
        let inserted: i64 = crate::cached::query_one(
            &client,
            "WITH task AS (
                 INSERT INTO tasks (id, team_id, callback_url, metadata, idempotency_key,
                                    request_hash)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (team_id, idempotency_key) DO NOTHING
                 RETURNING id
             ), attachments AS (
                 INSERT INTO attachments (id, task_id, position, uri, provider)
                 SELECT a.id, task.id, a.position, a.uri, a.provider
                 FROM task, UNNEST($7::uuid[], $8::int[], $9::text[], $10::text[])
                     AS a (id, position, uri, provider)
             ), jobs AS (
                 INSERT INTO outbox (kind, payload)
                 SELECT 'fetch', j.job FROM task, UNNEST($11::jsonb[]) AS j (job)
             )
             SELECT count(*) FROM task",
            &[
                &task.id.0,
                &task.team_id.0,
                &task.callback_url,
                &task.metadata,
                &task.idempotency_key,
                &task.request_hash,
                &ids,
                &positions,
                &uris,
                &providers,
                &jobs,
            ],
        )
        .await?
        .get(0);
        if inserted == 1 {
            return Ok(Inserted::Created);
        }
        let row = crate::cached::query_one(
            &client,
            "SELECT id, request_hash FROM tasks WHERE team_id = $1 AND idempotency_key = $2",
            &[&task.team_id.0, &task.idempotency_key],
        )
        .await?;
        Ok(Inserted::Existing {
            task_id: TaskId(row.get("id")),
            request_hash: row.get("request_hash"),
        })
    }

    /// Reads a task of `team_id` with its attachments. Returns `None` when the
    /// task does not exist or belongs to another team.
    pub async fn task_view(&self, team_id: TeamId, task_id: TaskId) -> Result<Option<TaskView>> {
        let client = self.pool.get().await?;
        let Some(task) = crate::cached::query_opt(
            &client,
            "SELECT id, status, callback_url, metadata, created_at, completed_at
                 FROM tasks WHERE id = $1 AND team_id = $2",
            &[&task_id.0, &team_id.0],
        )
        .await?
        else {
            return Ok(None);
        };
        let attachments = attachment_views(&client, task_id).await?;
        Ok(Some(TaskView {
            task_id,
            status: parse_column("tasks.status", task.get("status"))?,
            callback_url: task.get("callback_url"),
            metadata: task.get("metadata"),
            created_at: task.get("created_at"),
            completed_at: task.get("completed_at"),
            attachments,
        }))
    }
}

/// Reads a task's attachments in submission order.
pub(crate) async fn attachment_views(
    client: &impl deadpool_postgres::GenericClient,
    task_id: TaskId,
) -> Result<Vec<AttachmentView>> {
    let rows = crate::cached::query(
        client,
        "SELECT id, uri, status, size_bytes, sha256, content_type, error_code, error_message
             FROM attachments WHERE task_id = $1 ORDER BY position",
        &[&task_id.0],
    )
    .await?;
    rows.iter().map(attachment_view).collect()
}

/// Builds an [`AttachmentView`] from a row with the columns of
/// [`attachment_views`].
pub(crate) fn attachment_view(row: &tokio_postgres::Row) -> Result<AttachmentView> {
    Ok(AttachmentView {
        attachment_id: AttachmentId(row.get("id")),
        uri: row.get("uri"),
        status: parse_column("attachments.status", row.get("status"))?,
        size_bytes: row.get("size_bytes"),
        sha256: row.get("sha256"),
        content_type: row.get("content_type"),
        error_code: row.get("error_code"),
        error_message: row.get("error_message"),
    })
}
