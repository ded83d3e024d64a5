//! Queries of the callback-worker: loading a callback and recording one
//! delivery attempt.
//!
//! Every attempt is kept in `callback_attempts`. The callback row changes
//! only if it is still pending at the attempt number the job carried, and a
//! retry is scheduled as an outbox row with a future `available_at`.

use std::time::Duration;

use attache_domain::{CallbackId, CallbackJob, CallbackStatus, JobMessage, TaskId, TeamId};
use chrono::{DateTime, Utc};

use crate::{Result, Store, parse_column};

/// A callback ready to send.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub callback_id: CallbackId,
    pub task_id: TaskId,
    pub team_id: TeamId,
    pub url: String,
    /// The exact body to send.
    pub payload: String,
    /// The team's Standard Webhooks secret (`whsec_...`). Never log it.
    pub signing_secret: String,
    pub status: CallbackStatus,
    /// Attempts finished before this one.
    pub attempts: u32,
    /// Start of the current retry window; the retry policy's age limit
    /// counts from here.
    pub retry_window_start: DateTime<Utc>,
}

/// The result of claiming a delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker may send the attempt.
    Claimed,
    /// Another worker holds the attempt until this time.
    Held { until: DateTime<Utc> },
    /// The callback is final or at a later attempt.
    Stale,
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug)]
pub enum DeliveryResult {
    /// The customer's endpoint responded with 2xx.
    Delivered,
    /// The attempt failed and another one is scheduled after `delay`.
    Retry { error: String, delay: Duration },
    /// The callback will not be sent again unless an operator replays it.
    Dead { error: String },
}

/// One finished delivery attempt, as recorded.
#[derive(Clone, Debug)]
pub struct DeliveryAttempt {
    pub callback_id: CallbackId,
    /// The attempt number the job carried: attempts finished before it.
    pub attempt: u32,
    /// The response status, when a response arrived.
    pub status_code: Option<u16>,
    pub duration: Duration,
    pub egress_member: Option<String>,
    pub result: DeliveryResult,
}

impl Store {
    /// Loads the callback a job names, with its team's signing secret.
    pub async fn delivery(&self, callback_id: CallbackId) -> Result<Option<Delivery>> {
        let client = self.pool.get().await?;
        let row = crate::cached::query_opt(
            &client,
            "SELECT c.task_id, t.team_id, c.url, c.payload, c.status, c.attempts,
                        c.retry_window_start, team.signing_secret
                 FROM callbacks c
                 JOIN tasks t ON t.id = c.task_id
                 JOIN teams team ON team.id = t.team_id
                 WHERE c.id = $1",
            &[&callback_id.0],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Delivery {
            callback_id,
            task_id: TaskId(row.get("task_id")),
            team_id: TeamId(row.get("team_id")),
            url: row.get("url"),
            payload: row.get("payload"),
            signing_secret: row.get("signing_secret"),
            status: parse_column("callbacks.status", row.get("status"))?,
            attempts: row.get::<_, i32>("attempts") as u32,
            retry_window_start: row.get("retry_window_start"),
        }))
    }

    /// Claims attempt `attempt` of a pending callback for `lease`, so no
    /// other worker sends it meanwhile.
    pub async fn claim_delivery(
        &self,
        callback_id: CallbackId,
        attempt: u32,
        lease: Duration,
    ) -> Result<Claim> {
        let client = self.pool.get().await?;
        let claimed = crate::cached::execute(
            &client,
            "UPDATE callbacks SET lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND status = 'pending' AND attempts = $2
                   AND (lease_until IS NULL OR lease_until <= now())",
            &[&callback_id.0, &(attempt as i32), &lease.as_secs_f64()],
        )
        .await?;
        if claimed == 1 {
            return Ok(Claim::Claimed);
        }
        let row = crate::cached::query_opt(
            &client,
            "SELECT lease_until FROM callbacks
                 WHERE id = $1 AND status = 'pending' AND attempts = $2 AND lease_until > now()",
            &[&callback_id.0, &(attempt as i32)],
        )
        .await?;
        Ok(match row {
            Some(row) => Claim::Held {
                until: row.get("lease_until"),
            },
            None => Claim::Stale,
        })
    }

    /// Records one delivery attempt, and schedules the next one on
    /// [`DeliveryResult::Retry`]. Returns `false`, and changes nothing, when
    /// the callback is no longer pending at this attempt number.
    pub async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<bool> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (status, error) = match &attempt.result {
            DeliveryResult::Delivered => (CallbackStatus::Delivered, None),
            DeliveryResult::Retry { error, .. } => (CallbackStatus::Pending, Some(error)),
            DeliveryResult::Dead { error } => (CallbackStatus::Dead, Some(error)),
        };
        let status_code = attempt.status_code.map(i32::from);
        let updated = crate::cached::execute(
            &tx,
            "UPDATE callbacks SET status = $3, attempts = attempts + 1,
                     last_status_code = $4, last_error = $5, egress_member = $6,
                     last_attempt_at = now(), lease_until = NULL,
                     delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
                 WHERE id = $1 AND status = 'pending' AND attempts = $2",
            &[
                &attempt.callback_id.0,
                &(attempt.attempt as i32),
                &status.as_str(),
                &status_code,
                &error,
                &attempt.egress_member,
            ],
        )
        .await?;
        if updated == 0 {
            return Ok(false);
        }

        crate::cached::execute(&tx,
            "INSERT INTO callback_attempts (callback_id, attempt, status_code, error, duration_ms, egress_member)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &attempt.callback_id.0,
                &(attempt.attempt as i32 + 1),
                &status_code,
                &error,
                &(attempt.duration.as_millis().min(i32::MAX as u128) as i32),
                &attempt.egress_member,
            ],
        )
        .await?;

        if let DeliveryResult::Retry { delay, .. } = attempt.result {
            let job = JobMessage::Callback(CallbackJob {
                callback_id: attempt.callback_id,
                attempt: attempt.attempt + 1,
            });
            crate::cached::execute(
                &tx,
                "INSERT INTO outbox (kind, payload, available_at)
                 VALUES ('callback', $1, now() + make_interval(secs => $2))",
                &[&job.to_json(), &delay.as_secs_f64()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queues the same attempt again after `delay` without spending it, for
    /// a delivery held back by a per-host limit.
    pub async fn postpone_delivery(
        &self,
        callback_id: CallbackId,
        attempt: u32,
        delay: Duration,
    ) -> Result<()> {
        let client = self.pool.get().await?;
        let job = JobMessage::Callback(CallbackJob {
            callback_id,
            attempt,
        });
        crate::cached::execute(
            &client,
            "INSERT INTO outbox (kind, payload, available_at)
                 VALUES ('callback', $1, now() + make_interval(secs => $2))",
            &[&job.to_json(), &delay.as_secs_f64()],
        )
        .await?;
        Ok(())
    }
}
