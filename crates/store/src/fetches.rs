//! Queries of the fetch-worker: loading an attachment and recording one
//! fetch attempt.
//!
//! Recording an attempt is one transaction. The attachment row changes only
//! if it is still pending at the attempt number the job carried, so a stale
//! duplicate changes nothing. A retry is scheduled as an outbox row with a
//! future `available_at`. The last attachment of a task to reach a final
//! state also sets the task's status and writes its callback and callback job.

use std::time::Duration;

use attache_domain::{
    AttachmentId, AttachmentStatus, CallbackId, CallbackJob, ErrorCode, FetchJob, JobMessage,
    TaskId, TaskStatus, TeamId,
};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Serialize;

use crate::tasks::{AttachmentView, attachment_views};
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
    metadata: &'a serde_json::Value,
    attachments: &'a [AttachmentView],
}

impl Store {
    /// Loads the attachment a fetch job names, or `None` if it does not exist.
    pub async fn fetch_target(&self, attachment_id: AttachmentId) -> Result<Option<FetchTarget>> {
        let client = self.pool.get().await?;
        let row = crate::cached::query_opt(
            &client,
            "SELECT a.id, a.task_id, t.team_id, a.uri, a.status, a.attempts, a.retry_window_start,
                        team.aws_external_id, team.aws_account_id, team.aws_linked_at,
                        team.aws_bucket_owners, team.gcp_identifier,
                        team.gcp_service_account, team.gcp_linked_at,
                        team.azure_tenant, team.azure_linked_at
                 FROM attachments a JOIN tasks t ON t.id = a.task_id
                 JOIN teams team ON team.id = t.team_id
                 WHERE a.id = $1",
            &[&attachment_id.0],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(FetchTarget {
            attachment_id,
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
        }))
    }

    /// Records one attempt, schedules the next one on [`FetchResult::Retry`],
    /// and queues the callback when the attempt completes the task. See the
    /// module documentation for the guarantees.
    pub async fn record_fetch(&self, attempt: &FetchAttempt) -> Result<Recorded> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;

        let Some(task_id) = update_attachment(&tx, attempt).await? else {
            return Ok(Recorded::Stale);
        };
        if let FetchResult::Retry { delay, .. } = attempt.result {
            schedule_retry(&tx, attempt, delay).await?;
            tx.commit().await?;
            return Ok(Recorded::Attachment);
        }

        let completed = complete_task_if_done(&tx, task_id).await?;
        tx.commit().await?;
        Ok(completed.map_or(Recorded::Attachment, Recorded::TaskCompleted))
    }
}

/// Applies the attempt to the attachment row. Returns the attachment's task,
/// or `None` when the row is no longer pending at this attempt number.
async fn update_attachment(tx: &Transaction<'_>, attempt: &FetchAttempt) -> Result<Option<TaskId>> {
    let id = attempt.attachment_id.0;
    let expected = attempt.attempt as i32;
    let member = &attempt.egress_member;
    let row = match &attempt.result {
        FetchResult::Stored {
            size_bytes,
            sha256,
            content_type,
            storage_key,
        } => {
            crate::cached::query_opt(
                tx,
                "UPDATE attachments SET status = 'succeeded', attempts = attempts + 1,
                     size_bytes = $3, sha256 = $4, content_type = $5, storage_key = $6,
                     egress_member = $7, error_code = NULL, error_message = NULL,
                     updated_at = now(), completed_at = now()
                 WHERE id = $1 AND status = 'pending' AND attempts = $2
                 RETURNING task_id",
                &[
                    &id,
                    &expected,
                    &(*size_bytes as i64),
                    sha256,
                    content_type,
                    storage_key,
                    member,
                ],
            )
            .await?
        }
        FetchResult::Failed { code, message } => {
            crate::cached::query_opt(
                tx,
                "UPDATE attachments SET status = 'failed', attempts = attempts + 1,
                     error_code = $3, error_message = $4, egress_member = $5,
                     updated_at = now(), completed_at = now()
                 WHERE id = $1 AND status = 'pending' AND attempts = $2
                 RETURNING task_id",
                &[&id, &expected, &code.as_str(), message, member],
            )
            .await?
        }
        FetchResult::Retry { code, message, .. } => {
            crate::cached::query_opt(
                tx,
                "UPDATE attachments SET attempts = attempts + 1,
                     error_code = $3, error_message = $4, egress_member = $5, updated_at = now()
                 WHERE id = $1 AND status = 'pending' AND attempts = $2
                 RETURNING task_id",
                &[&id, &expected, &code.as_str(), message, member],
            )
            .await?
        }
    };
    Ok(row.map(|row| TaskId(row.get("task_id"))))
}

async fn schedule_retry(
    tx: &Transaction<'_>,
    attempt: &FetchAttempt,
    delay: Duration,
) -> Result<()> {
    let job = JobMessage::Fetch(FetchJob {
        attachment_id: attempt.attachment_id,
        attempt: attempt.attempt + 1,
    });
    crate::cached::execute(
        tx,
        "INSERT INTO outbox (kind, payload, available_at)
         VALUES ('fetch', $1, now() + make_interval(secs => $2))",
        &[&job.to_json(), &delay.as_secs_f64()],
    )
    .await?;
    Ok(())
}

/// Sets the task's final status and queues its callback once no attachment
/// is pending. The task row lock serialises attachments of one task that
/// finish at once, so the last transaction to take the lock reads every
/// outcome and the task completes exactly once.
async fn complete_task_if_done(
    tx: &Transaction<'_>,
    task_id: TaskId,
) -> Result<Option<TaskStatus>> {
    let task = crate::cached::query_one(
        tx,
        "SELECT callback_url, metadata, status FROM tasks WHERE id = $1 FOR UPDATE",
        &[&task_id.0],
    )
    .await?;
    if task.get::<_, &str>("status") != TaskStatus::Pending.as_str() {
        return Ok(None);
    }
    let attachments = attachment_views(tx, task_id).await?;
    if attachments.iter().any(|a| !a.status.is_final()) {
        return Ok(None);
    }
    let succeeded = attachments
        .iter()
        .filter(|a| a.status == AttachmentStatus::Succeeded)
        .count();
    let status = TaskStatus::from_counts(succeeded, attachments.len() - succeeded);

    crate::cached::execute(
        tx,
        "UPDATE tasks SET status = $2, completed_at = now() WHERE id = $1",
        &[&task_id.0, &status.as_str()],
    )
    .await?;

    let metadata: serde_json::Value = task.get("metadata");
    let payload = CallbackPayload {
        kind: "task.completed",
        timestamp: Utc::now(),
        data: CallbackData {
            task_id,
            status,
            metadata: &metadata,
            attachments: &attachments,
        },
    };
    let body = serde_json::to_string(&payload)
        .expect("a callback payload contains only serializable values");
    let callback_id = CallbackId::new();
    let url: String = task.get("callback_url");
    crate::cached::execute(
        tx,
        "INSERT INTO callbacks (id, task_id, url, payload) VALUES ($1, $2, $3, $4)",
        &[&callback_id.0, &task_id.0, &url, &body],
    )
    .await?;
    let job = JobMessage::Callback(CallbackJob {
        callback_id,
        attempt: 0,
    });
    crate::cached::execute(
        tx,
        "INSERT INTO outbox (kind, payload) VALUES ('callback', $1)",
        &[&job.to_json()],
    )
    .await?;
    Ok(Some(status))
}
