//! Queries of the fetch-worker: loading an attachment and recording one
//! fetch attempt.
//!
//! Recording an attempt, or a batch of them, is one transaction. An
//! attachment row changes only if it is still pending at the attempt number
//! the job carried, so a stale duplicate changes nothing. A retry is scheduled as an outbox row with a
//! future `available_at`. The last attachment of a task to reach a final
//! state also sets the task's status and writes its callback and callback job.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use attache_domain::{
    AttachmentId, AttachmentStatus, CallbackId, CallbackJob, ErrorCode, FetchJob, JobMessage,
    TaskId, TaskStatus, TeamId,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Serialize;

use crate::tasks::{AttachmentView, attachment_view};
use crate::{Result, Store, parse_column};

/// An attachment to fetch, with its task, team and current state.
#[derive(Clone, Debug)]
pub struct FetchTarget {
    pub attachment_id: AttachmentId,
    pub task_id: TaskId,
    pub team_id: TeamId,
    pub uri: String,
    pub status: AttachmentStatus,
    /// Attempts finished before this one.
    pub attempts: u32,
    /// Start of the current retry window; the retry policy's age limit
    /// counts from here.
    pub retry_window_start: DateTime<Utc>,
    /// The team's AWS settings, which decide how `s3://` objects are read.
    pub aws: crate::integrations::AwsIntegration,
    /// The team's Google Cloud settings, which decide how `gs://` objects
    /// are read.
    pub gcp: crate::integrations::GcpIntegration,
    /// The team's Azure link, which decides how Azure blobs are read.
    pub azure: crate::integrations::AzureIntegration,
}

/// The outcome of one fetch attempt.
#[derive(Clone, Debug)]
pub enum FetchResult {
    /// The object is in the attachment store.
    Stored {
        size_bytes: u64,
        sha256: String,
        content_type: Option<String>,
        storage_key: String,
    },
    /// The attachment failed for good.
    Failed { code: ErrorCode, message: String },
    /// The attempt failed and another one is scheduled after `delay`.
    Retry {
        code: ErrorCode,
        message: String,
        delay: Duration,
    },
}

/// One finished attempt, as recorded.
#[derive(Clone, Debug)]
pub struct FetchAttempt {
    pub attachment_id: AttachmentId,
    /// The attempt number the job carried: attempts finished before it.
    pub attempt: u32,
    /// The egress member that carried the request, if any.
    pub egress_member: Option<String>,
    pub result: FetchResult,
}

/// The outcome of [`Store::record_fetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing changed, because the attachment is final or a newer attempt
    /// was already recorded.
    Stale,
    /// The attempt is recorded and the task still has pending attachments,
    /// or a retry is scheduled.
    Attachment,
    /// The attempt completed the task, and its callback is queued.
    TaskCompleted(TaskStatus),
}

/// The body of a task's callback.
#[derive(Serialize)]
struct CallbackPayload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: DateTime<Utc>,
    data: CallbackData<'a>,
}

#[derive(Serialize)]
struct CallbackData<'a> {
    task_id: TaskId,
    status: TaskStatus,
    metadata: &'a serde_json::value::RawValue,
    attachments: &'a [AttachmentView],
}

impl Store {
    /// Loads the attachment a fetch job names, or `None` if it does not exist.
    pub async fn fetch_target(&self, attachment_id: AttachmentId) -> Result<Option<FetchTarget>> {
        let mut targets = self.fetch_targets(&[attachment_id]).await?;
        Ok(targets.remove(&attachment_id))
    }

    /// Loads many attachments in one query, as [`Store::fetch_target`] does
    /// for one. An id that does not exist is missing from the map.
    pub async fn fetch_targets(
        &self,
        attachment_ids: &[AttachmentId],
    ) -> Result<HashMap<AttachmentId, FetchTarget>> {
        let ids: Vec<uuid::Uuid> = attachment_ids.iter().map(|id| id.0).collect();
        let client = self.pool.get().await?;
        let rows = crate::cached::query(
            &client,
            "SELECT a.id, a.task_id, t.team_id, a.uri, a.status, a.attempts, a.retry_window_start,
                        team.aws_external_id, team.aws_account_id, team.aws_linked_at,
                        team.aws_bucket_owners, team.gcp_identifier,
                        team.gcp_service_account, team.gcp_linked_at,
                        team.azure_tenant, team.azure_linked_at
                 FROM attachments a JOIN tasks t ON t.id = a.task_id
                 JOIN teams team ON team.id = t.team_id
                 WHERE a.id = ANY($1)",
            &[&ids],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let target = fetch_target(row)?;
                Ok((target.attachment_id, target))
            })
            .collect()
    }

    /// Queues `job` again, unchanged, due after `delay`: for a job that its
    /// worker could not start in time. A copy that finds the attempt already
    /// recorded is stale and skipped.
    pub async fn postpone_fetch(&self, job: FetchJob, delay: Duration) -> Result<()> {
        let client = self.pool.get().await?;
        queue_fetch_jobs(&client, &[(job, delay)]).await
    }

    /// Records one attempt, schedules the next one on [`FetchResult::Retry`],
    /// and queues the callback when the attempt completes the task. See the
    /// module documentation for the guarantees.
    pub async fn record_fetch(&self, attempt: &FetchAttempt) -> Result<Recorded> {
        let recorded = self.record_fetches(std::slice::from_ref(attempt)).await?;
        Ok(recorded[0])
    }

    /// Records many attempts in one transaction, as [`Store::record_fetch`]
    /// does for one, and returns their outcomes in the order given. One
    /// commit for the batch saves the database a WAL flush and a lock round
    /// per attempt. Of two equal attempts (same attachment and attempt
    /// number), the first is recorded and the second is stale. When several
    /// attempts of one task are recorded, the last of them reports the
    /// task's completion.
    pub async fn record_fetches(&self, attempts: &[FetchAttempt]) -> Result<Vec<Recorded>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        let mut seen = HashSet::new();
        let unique: Vec<&FetchAttempt> = attempts
            .iter()
            .filter(|attempt| seen.insert(attempt.key()))
            .collect();
        let updated = update_attachments(&tx, &unique).await?;
        let retries: Vec<&FetchAttempt> = unique
            .iter()
            .copied()
            .filter(|attempt| {
                updated.contains_key(&attempt.key())
                    && matches!(attempt.result, FetchResult::Retry { .. })
            })
            .collect();
        schedule_retries(&tx, &retries).await?;
        let mut finished: Vec<TaskId> = unique
            .iter()
            .filter(|attempt| !matches!(attempt.result, FetchResult::Retry { .. }))
            .filter_map(|attempt| updated.get(&attempt.key()).copied())
            .collect();
        finished.sort();
        finished.dedup();
        let mut completed = complete_tasks_if_done(&tx, &finished).await?;
        tx.commit().await?;

        let mut recorded = vec![Recorded::Stale; attempts.len()];
        let mut first = HashSet::new();
        for (index, attempt) in attempts.iter().enumerate() {
            if first.insert(attempt.key()) && updated.contains_key(&attempt.key()) {
                recorded[index] = Recorded::Attachment;
            }
        }
        for (index, attempt) in attempts.iter().enumerate().rev() {
            if recorded[index] == Recorded::Stale {
                continue;
            }
            if let Some(status) = completed.remove(&updated[&attempt.key()]) {
                recorded[index] = Recorded::TaskCompleted(status);
            }
        }
        Ok(recorded)
    }
}

impl FetchAttempt {
    /// Returns the attachment and the attempt number, which make an attempt
    /// unique.
    fn key(&self) -> (AttachmentId, u32) {
        (self.attachment_id, self.attempt)
    }
}

fn fetch_target(row: &tokio_postgres::Row) -> Result<FetchTarget> {
    Ok(FetchTarget {
        attachment_id: AttachmentId(row.get("id")),
        task_id: TaskId(row.get("task_id")),
        team_id: TeamId(row.get("team_id")),
        uri: row.get("uri"),
        status: parse_column("attachments.status", row.get("status"))?,
        attempts: row.get::<_, i32>("attempts") as u32,
        retry_window_start: row.get("retry_window_start"),
        aws: crate::integrations::AwsIntegration {
            external_id: row.get("aws_external_id"),
            account_id: row.get("aws_account_id"),
            linked_at: row.get("aws_linked_at"),
            bucket_owners: row.get("aws_bucket_owners"),
        },
        gcp: crate::integrations::GcpIntegration {
            identifier: row.get("gcp_identifier"),
            service_account: row.get("gcp_service_account"),
            linked_at: row.get("gcp_linked_at"),
        },
        azure: crate::integrations::AzureIntegration {
            tenant: row.get("azure_tenant"),
            linked_at: row.get("azure_linked_at"),
        },
    })
}

/// The columns of one attempt as it is written to its attachment row.
#[derive(Default)]
struct AttemptColumns<'a> {
    ids: Vec<uuid::Uuid>,
    expected: Vec<i32>,
    statuses: Vec<&'static str>,
    sizes: Vec<Option<i64>>,
    sha256s: Vec<Option<&'a str>>,
    content_types: Vec<Option<&'a str>>,
    storage_keys: Vec<Option<&'a str>>,
    members: Vec<Option<&'a str>>,
    codes: Vec<Option<&'static str>>,
    messages: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, attempt: &'a FetchAttempt) {
        self.ids.push(attempt.attachment_id.0);
        self.expected.push(attempt.attempt as i32);
        self.members.push(attempt.egress_member.as_deref());
        match &attempt.result {
            FetchResult::Stored {
                size_bytes,
                sha256,
                content_type,
                storage_key,
            } => {
                self.statuses.push(AttachmentStatus::Succeeded.as_str());
                self.sizes.push(Some(*size_bytes as i64));
                self.sha256s.push(Some(sha256));
                self.content_types.push(content_type.as_deref());
                self.storage_keys.push(Some(storage_key));
                self.codes.push(None);
                self.messages.push(None);
            }
            FetchResult::Failed { code, message } | FetchResult::Retry { code, message, .. } => {
                let status = match attempt.result {
                    FetchResult::Failed { .. } => AttachmentStatus::Failed,
                    _ => AttachmentStatus::Pending,
                };
                self.statuses.push(status.as_str());
                self.sizes.push(None);
                self.sha256s.push(None);
                self.content_types.push(None);
                self.storage_keys.push(None);
                self.codes.push(Some(code.as_str()));
                self.messages.push(Some(message));
            }
        }
    }
}

/// Applies the attempts to their attachment rows in one statement. A stored
/// result sets the object's facts and clears the error; a failure sets the
/// error and a retry leaves the row pending. Returns the task of each
/// attempt, by attachment and attempt number, whose row was still pending at
/// that attempt number.
async fn update_attachments(
    tx: &Transaction<'_>,
    attempts: &[&FetchAttempt],
) -> Result<HashMap<(AttachmentId, u32), TaskId>> {
    let mut columns = AttemptColumns::default();
    for attempt in attempts {
        columns.push(attempt);
    }
    let rows = crate::cached::query(
        tx,
        "UPDATE attachments a SET
             status = v.status,
             attempts = a.attempts + 1,
             size_bytes = CASE WHEN v.status = 'succeeded' THEN v.size_bytes ELSE a.size_bytes END,
             sha256 = CASE WHEN v.status = 'succeeded' THEN v.sha256 ELSE a.sha256 END,
             content_type = CASE WHEN v.status = 'succeeded' THEN v.content_type ELSE a.content_type END,
             storage_key = CASE WHEN v.status = 'succeeded' THEN v.storage_key ELSE a.storage_key END,
             egress_member = v.egress_member,
             error_code = v.error_code,
             error_message = v.error_message,
             updated_at = now(),
             completed_at = CASE WHEN v.status = 'pending' THEN a.completed_at ELSE now() END
         FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[])
             AS v (id, expected, status, size_bytes, sha256, content_type, storage_key,
                   egress_member, error_code, error_message)
         WHERE a.id = v.id AND a.status = 'pending' AND a.attempts = v.expected
         RETURNING a.id, v.expected, a.task_id",
        &[
            &columns.ids,
            &columns.expected,
            &columns.statuses,
            &columns.sizes,
            &columns.sha256s,
            &columns.content_types,
            &columns.storage_keys,
            &columns.members,
            &columns.codes,
            &columns.messages,
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let key = (
                AttachmentId(row.get("id")),
                row.get::<_, i32>("expected") as u32,
            );
            (key, TaskId(row.get("task_id")))
        })
        .collect())
}

/// Queues the next attempt of each retried attachment as an outbox row
/// that becomes due after the attempt's delay.
async fn schedule_retries(tx: &Transaction<'_>, attempts: &[&FetchAttempt]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let jobs: Vec<(FetchJob, Duration)> = attempts
        .iter()
        .filter_map(|attempt| match attempt.result {
            FetchResult::Retry { delay, .. } => Some((
                FetchJob {
                    attachment_id: attempt.attachment_id,
                    attempt: attempt.attempt + 1,
                },
                delay,
            )),
            _ => None,
        })
        .collect();
    queue_fetch_jobs(tx, &jobs).await
}

/// Writes each job as an outbox row that becomes due after its delay.
async fn queue_fetch_jobs(
    client: &impl deadpool_postgres::GenericClient,
    jobs: &[(FetchJob, Duration)],
) -> Result<()> {
    let payloads: Vec<serde_json::Value> = jobs
        .iter()
        .map(|(job, _)| JobMessage::Fetch(*job).to_json())
        .collect();
    let delays: Vec<f64> = jobs.iter().map(|(_, delay)| delay.as_secs_f64()).collect();
    crate::cached::execute(
        client,
        "INSERT INTO outbox (kind, payload, available_at)
         SELECT 'fetch', job, now() + make_interval(secs => delay)
         FROM UNNEST($1::jsonb[], $2::float8[]) AS j (job, delay)",
        &[&payloads, &delays],
    )
    .await?;
    Ok(())
}

/// Sets the final status of each task in `task_ids` that has no pending
/// attachment left, and queues its callback. `task_ids` must be sorted: the
/// task rows are locked in that order, so two batches never wait on each
/// other in a cycle. The lock serialises attachments of one task that finish
/// at once, so the last transaction to take it reads every outcome and the
/// task completes exactly once.
async fn complete_tasks_if_done(
    tx: &Transaction<'_>,
    task_ids: &[TaskId],
) -> Result<HashMap<TaskId, TaskStatus>> {
    debug_assert!(task_ids.is_sorted(), "task rows are locked in id order");
    if task_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<uuid::Uuid> = task_ids.iter().map(|id| id.0).collect();
    let tasks = crate::cached::query(
        tx,
        "SELECT id, callback_url, metadata::text AS metadata FROM tasks
             WHERE id = ANY($1) AND status = 'pending'
             ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let pending: Vec<uuid::Uuid> = tasks.iter().map(|row| row.get("id")).collect();
    let rows = crate::cached::query(
        tx,
        "SELECT task_id, id, uri, status, size_bytes, sha256, content_type, error_code,
                error_message
             FROM attachments WHERE task_id = ANY($1) ORDER BY task_id, position",
        &[&pending],
    )
    .await?;
    let mut views: HashMap<TaskId, Vec<AttachmentView>> = HashMap::new();
    for row in &rows {
        views
            .entry(TaskId(row.get("task_id")))
            .or_default()
            .push(attachment_view(row)?);
    }

    let mut completed = HashMap::new();
    let mut statuses = Vec::new();
    let mut callbacks = CallbackColumns::default();
    for task in &tasks {
        let task_id = TaskId(task.get("id"));
        let attachments = views.remove(&task_id).unwrap_or_default();
        if attachments.iter().any(|a| !a.status.is_final()) {
            continue;
        }
        let succeeded = attachments
            .iter()
            .filter(|a| a.status == AttachmentStatus::Succeeded)
            .count();
        let status = TaskStatus::from_counts(succeeded, attachments.len() - succeeded);
        completed.insert(task_id, status);
        statuses.push(status.as_str());
        callbacks.push(task_id, status, task, &attachments)?;
    }
    if completed.is_empty() {
        return Ok(completed);
    }

    crate::cached::execute(
        tx,
        "UPDATE tasks t SET status = v.status, completed_at = now()
         FROM UNNEST($1::uuid[], $2::text[]) AS v (id, status)
         WHERE t.id = v.id",
        &[&callbacks.task_ids, &statuses],
    )
    .await?;
    crate::cached::execute(
        tx,
        "INSERT INTO callbacks (id, task_id, url, payload)
         SELECT id, task_id, url, payload
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[])
             AS c (id, task_id, url, payload)",
        &[
            &callbacks.ids,
            &callbacks.task_ids,
            &callbacks.urls,
            &callbacks.payloads,
        ],
    )
    .await?;
    crate::cached::execute(
        tx,
        "INSERT INTO outbox (kind, payload) SELECT 'callback', job FROM UNNEST($1::jsonb[]) AS j (job)",
        &[&callbacks.jobs],
    )
    .await?;
    Ok(completed)
}

/// The callbacks of the tasks a batch completes, column by column.
#[derive(Default)]
struct CallbackColumns {
    ids: Vec<uuid::Uuid>,
    task_ids: Vec<uuid::Uuid>,
    urls: Vec<String>,
    payloads: Vec<String>,
    jobs: Vec<serde_json::Value>,
}

impl CallbackColumns {
    /// Adds the callback of a completed task: its body, built once and sent
    /// unchanged on every attempt, and the job that delivers it.
    fn push(
        &mut self,
        task_id: TaskId,
        status: TaskStatus,
        task: &tokio_postgres::Row,
        attachments: &[AttachmentView],
    ) -> Result<()> {
        let metadata = crate::metadata_column(task)?;
        let payload = CallbackPayload {
            kind: "task.completed",
            timestamp: Utc::now(),
            data: CallbackData {
                task_id,
                status,
                metadata: &metadata,
                attachments,
            },
        };
        let callback_id = CallbackId::new();
        self.ids.push(callback_id.0);
        self.task_ids.push(task_id.0);
        self.urls.push(task.get("callback_url"));
        self.payloads.push(
            serde_json::to_string(&payload)
                .expect("a callback payload contains only serializable values"),
        );
        self.jobs.push(
            JobMessage::Callback(CallbackJob {
                callback_id,
                attempt: 0,
            })
            .to_json(),
        );
        Ok(())
    }
}
