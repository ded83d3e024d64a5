//! Accepting tasks and reading them back.
//!
//! A task, its attachments and its fetch jobs (one outbox row per group of
//! jobs) are written in one transaction, so every task accepted with 202 has
//! its jobs queued. Many tasks can share that transaction. A unique index on
//! the team and idempotency key rejects duplicates. A concurrent duplicate
//! waits for the first insert to commit and then reads the existing task.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use attache_domain::{AttachmentId, FetchJob, JobMessage, Provider, TaskId, TeamId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{Result, Store, StoreError, parse_column};

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
#[derive(Clone, Debug)]
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

/// A task as shown by the API: the fields of its callback, and how the
/// delivery of the callback goes.
#[derive(Clone, Debug, Serialize)]
pub struct TaskView {
    pub task_id: TaskId,
    pub status: attache_domain::TaskStatus,
    pub callback_url: String,
    /// The metadata, as compact JSON text with sorted keys.
    pub metadata: Box<serde_json::value::RawValue>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attachments: Vec<AttachmentView>,
    /// The latest callback, once the task has completed, and `None` while
    /// it is pending, also after a replay reopened it.
    pub callback: Option<CallbackDelivery>,
}

/// The delivery of a task's callback so far.
#[derive(Clone, Debug, Serialize)]
pub struct CallbackDelivery {
    pub status: attache_domain::CallbackStatus,
    /// Attempts made since the callback was created or last replayed,
    /// counting those that could not send a request.
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
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
        let mut outcomes = self.insert_tasks(std::slice::from_ref(task)).await?;
        outcomes.remove(0)
    }

    /// Inserts many tasks in one statement and transaction, as
    /// [`Store::insert_task`] does for one. Fails as a whole only when that
    /// statement fails, and nothing was written. Otherwise returns each
    /// task's outcome in the order given, where an error means that the
    /// task was not inserted and its existing task could not be read. Of two
    /// tasks in `tasks` with the same team and idempotency key, the first is
    /// inserted and the second finds it, as a later request would.
    pub async fn insert_tasks<T: Borrow<NewTask> + Sync>(
        &self,
        tasks: &[T],
    ) -> Result<Vec<Result<Inserted>>> {
        self.insert_tasks_within(tasks, INSERT_TIMEOUT).await
    }

    /// Inserts tasks as [`Store::insert_tasks`] does, but cancels the
    /// statement, and fails, once it has run for `timeout`.
    pub async fn insert_tasks_within<T: Borrow<NewTask> + Sync>(
        &self,
        tasks: &[T],
        timeout: std::time::Duration,
    ) -> Result<Vec<Result<Inserted>>> {
        let tasks: Vec<&NewTask> = tasks.iter().map(Borrow::borrow).collect();
        let client = self.pool.get().await?;
        let created = insert_rows(&client, &tasks, timeout).await?;
        let existing = if created.len() == tasks.len() {
            Ok(HashMap::new())
        } else {
            existing_tasks(&client, &tasks, &created).await
        };
        let existing = existing.map_err(Arc::new);

        let outcome = |task: &NewTask| {
            if created.contains(&task.id.0) {
                return Ok(Inserted::Created);
            }
            let existing = existing
                .as_ref()
                .map_err(|error| StoreError::Batch(error.clone()))?;
            let key = (task.team_id.0, task.idempotency_key.clone());
            existing.get(&key).cloned().ok_or_else(|| {
                StoreError::Inconsistent(format!(
                    "task {} was not inserted, and its team has no task with its idempotency key",
                    task.id
                ))
            })
        };
        Ok(tasks.into_iter().map(outcome).collect())
    }

    /// Reads a task of `team_id` with its attachments and the delivery of
    /// its callback. Returns `None` when the task does not exist or belongs
    /// to another team.
    pub async fn task_view(&self, team_id: TeamId, task_id: TaskId) -> Result<Option<TaskView>> {
        let client = self.pool.get().await?;
        // A replayed attachment completes its task again with a new
        // callback, so the view shows the latest.
        let Some(task) = crate::cached::query_opt(
            &client,
            "SELECT t.status, t.callback_url, t.metadata::text AS metadata, t.created_at,
                    t.completed_at, c.status AS callback_status, c.attempts, c.last_status_code,
                    c.last_error, c.last_attempt_at, c.delivered_at
                 FROM tasks t
                 LEFT JOIN LATERAL (
                     SELECT status, attempts, last_status_code, last_error, last_attempt_at,
                            delivered_at
                     FROM callbacks WHERE task_id = t.id
                     ORDER BY created_at DESC, id DESC LIMIT 1
                 ) c ON true
                 WHERE t.id = $1 AND t.team_id = $2",
            &[&task_id.0, &team_id.0],
        )
        .await?
        else {
            return Ok(None);
        };
        let attachments = attachment_views(&client, task_id).await?;
        let status = parse_column("tasks.status", task.get("status"))?;
        let callback_status: Option<&str> = task.get("callback_status");
        let callback = match callback_status {
            // A replayed attachment reopens its task, whose earlier callback
            // no longer describes its result.
            Some(_) if status == attache_domain::TaskStatus::Pending => None,
            Some(callback_status) => Some(CallbackDelivery {
                status: parse_column("callbacks.status", callback_status)?,
                attempts: task.get("attempts"),
                last_status_code: task.get("last_status_code"),
                last_error: task.get("last_error"),
                last_attempt_at: task.get("last_attempt_at"),
                delivered_at: task.get("delivered_at"),
            }),
            None => None,
        };
        Ok(Some(TaskView {
            task_id,
            status,
            callback_url: task.get("callback_url"),
            metadata: crate::metadata_column(&task)?,
            created_at: task.get("created_at"),
            completed_at: task.get("completed_at"),
            attachments,
            callback,
        }))
    }
}

/// Writes the rows of `tasks` whose idempotency keys are unused, and their
/// attachments and jobs, in one statement, and returns their ids.
async fn insert_rows(
    client: &deadpool_postgres::Client,
    tasks: &[&NewTask],
    timeout: std::time::Duration,
) -> Result<HashSet<Uuid>> {
    let columns = TaskColumns::new(tasks);
    // One statement is one transaction and one round trip. Attachments and
    // jobs are written only for the task rows that are. Task rows go in by
    // team and key, so two batches that share keys wait on them in the same
    // order. A batch rejected all the same, by a deadlock or one bad row,
    // is retried task by task by the caller.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
        &columns.ids,
        &columns.team_ids,
        &columns.callback_urls,
        &columns.metadata,
        &columns.idempotency_keys,
        &columns.request_hashes,
        &columns.attachment_ids,
        &columns.attachment_tasks,
        &columns.positions,
        &columns.uris,
        &columns.providers,
        &columns.job_tasks,
        &columns.jobs,
    ];
    let statement = crate::cached::query(
        client,
        "WITH task AS (
             INSERT INTO tasks (id, team_id, callback_url, metadata, idempotency_key,
                                request_hash)
             SELECT t.id, t.team_id, t.callback_url, t.metadata, t.idempotency_key,
                    t.request_hash
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[],
                         $6::bytea[]) WITH ORDINALITY
                 AS t (id, team_id, callback_url, metadata, idempotency_key, request_hash, n)
             ORDER BY t.team_id, t.idempotency_key, t.n
             ON CONFLICT (team_id, idempotency_key) DO NOTHING
             RETURNING id
         ), attachments AS (
             INSERT INTO attachments (id, task_id, position, uri, provider)
             SELECT a.id, a.task_id, a.position, a.uri, a.provider
             FROM UNNEST($7::uuid[], $8::uuid[], $9::int[], $10::text[], $11::text[])
                 AS a (id, task_id, position, uri, provider)
             JOIN task ON task.id = a.task_id
         ), jobs AS (
             INSERT INTO outbox (kind, payload)
             SELECT 'fetch', j.job
             FROM UNNEST($12::uuid[], $13::jsonb[]) WITH ORDINALITY AS j (task_id, job, n)
             JOIN task ON task.id = j.task_id
             ORDER BY j.n
         )
         SELECT id FROM task",
        &params,
    );
    let rows = cancel_after(client, timeout, statement).await?;
    Ok(rows.iter().map(|row| row.get("id")).collect())
}

/// Awaits `statement`, run on `client`, and cancels it on the server once it
/// has run for `timeout`, then awaits its outcome. A statement that waits on
/// another transaction's lock thus ends, and a caller that gives up never
/// leaves behind tasks that commit later.
async fn cancel_after<T>(
    client: &deadpool_postgres::Client,
    timeout: std::time::Duration,
    statement: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::pin!(statement);
    match tokio::time::timeout(timeout, &mut statement).await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::warn!(?timeout, "a task insert is taking too long; cancelling it");
            if let Err(error) = client
                .cancel_token()
                .cancel_query(tokio_postgres::NoTls)
                .await
            {
                tracing::warn!(%error, "failed to cancel a task insert; waiting for it");
            }
            statement.await
        }
    }
}

/// Time a task insert may take before it is cancelled. Below the store
/// batches' timeout, so a batch of inserts ends with its true outcome.
const INSERT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The columns of a batch of new tasks, as the arrays that
/// [`Store::insert_tasks`] unnests.
struct TaskColumns<'a> {
    ids: Vec<Uuid>,
    team_ids: Vec<Uuid>,
    callback_urls: Vec<&'a str>,
    metadata: Vec<&'a serde_json::Value>,
    idempotency_keys: Vec<Option<&'a str>>,
    request_hashes: Vec<&'a [u8]>,
    attachment_ids: Vec<Uuid>,
    attachment_tasks: Vec<Uuid>,
    positions: Vec<i32>,
    uris: Vec<&'a str>,
    providers: Vec<&'a str>,
    job_tasks: Vec<Uuid>,
    jobs: Vec<serde_json::Value>,
}

impl<'a> TaskColumns<'a> {
    fn new(tasks: &[&'a NewTask]) -> Self {
        let mut columns = Self {
            ids: Vec::with_capacity(tasks.len()),
            team_ids: Vec::with_capacity(tasks.len()),
            callback_urls: Vec::with_capacity(tasks.len()),
            metadata: Vec::with_capacity(tasks.len()),
            idempotency_keys: Vec::with_capacity(tasks.len()),
            request_hashes: Vec::with_capacity(tasks.len()),
            attachment_ids: Vec::new(),
            attachment_tasks: Vec::new(),
            positions: Vec::new(),
            uris: Vec::new(),
            providers: Vec::new(),
            job_tasks: Vec::new(),
            jobs: Vec::new(),
        };
        for task in tasks {
            columns.ids.push(task.id.0);
            columns.team_ids.push(task.team_id.0);
            columns.callback_urls.push(&task.callback_url);
            columns.metadata.push(&task.metadata);
            columns
                .idempotency_keys
                .push(task.idempotency_key.as_deref());
            columns.request_hashes.push(&task.request_hash);
            for (position, attachment) in task.attachments.iter().enumerate() {
                columns.attachment_ids.push(attachment.id.0);
                columns.attachment_tasks.push(task.id.0);
                columns.positions.push(position as i32);
                columns.uris.push(&attachment.uri);
                columns.providers.push(attachment.provider.as_str());
            }
            let jobs: Vec<FetchJob> = task
                .attachments
                .iter()
                .map(|a| FetchJob {
                    attachment_id: a.id,
                    attempt: 0,
                })
                .collect();
            for job in JobMessage::fetches(&jobs) {
                columns.job_tasks.push(task.id.0);
                columns.jobs.push(job.to_json());
            }
        }
        columns
    }
}

/// Reads the tasks that hold the idempotency keys of the tasks in `tasks`
/// that were not `created`, by team and key.
async fn existing_tasks(
    client: &impl deadpool_postgres::GenericClient,
    tasks: &[&NewTask],
    created: &HashSet<Uuid>,
) -> Result<HashMap<(Uuid, Option<String>), Inserted>> {
    let (team_ids, keys): (Vec<Uuid>, Vec<Option<&str>>) = tasks
        .iter()
        .filter(|task| !created.contains(&task.id.0))
        .map(|task| (task.team_id.0, task.idempotency_key.as_deref()))
        .unzip();
    let rows = crate::cached::query(
        client,
        "SELECT t.id, t.team_id, t.idempotency_key, t.request_hash
             FROM tasks t
             JOIN UNNEST($1::uuid[], $2::text[]) AS k (team_id, idempotency_key)
                 ON t.team_id = k.team_id AND t.idempotency_key = k.idempotency_key",
        &[&team_ids, &keys],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let key = (row.get("team_id"), row.get("idempotency_key"));
            let existing = Inserted::Existing {
                task_id: TaskId(row.get("id")),
                request_hash: row.get("request_hash"),
            };
            (key, existing)
        })
        .collect())
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
