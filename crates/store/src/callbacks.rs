//! Queries of the callback-worker: loading a callback and recording one
//! delivery attempt.
//!
//! Every attempt is kept in `callback_attempts`. The callback row changes
//! only if it is still pending at the attempt number the job carried, and a
//! retry is scheduled as an outbox row with a future `available_at`.

use std::collections::{HashMap, HashSet};
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
        let mut deliveries = self.deliveries(&[callback_id]).await?;
        Ok(deliveries.remove(&callback_id))
    }

    /// Loads many callbacks in one query, as [`Store::delivery`] does for
    /// one. An id that does not exist is missing from the map.
    pub async fn deliveries(
        &self,
        callback_ids: &[CallbackId],
    ) -> Result<HashMap<CallbackId, Delivery>> {
        let ids: Vec<uuid::Uuid> = callback_ids.iter().map(|id| id.0).collect();
        let client = self.pool.get().await?;
        let rows = crate::cached::query(
            &client,
            "SELECT c.id, c.task_id, t.team_id, c.url, c.payload, c.status, c.attempts,
                        c.retry_window_start, team.signing_secret
                 FROM callbacks c
                 JOIN tasks t ON t.id = c.task_id
                 JOIN teams team ON team.id = t.team_id
                 WHERE c.id = ANY($1)",
            &[&ids],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let delivery = Delivery {
                    callback_id: CallbackId(row.get("id")),
                    task_id: TaskId(row.get("task_id")),
                    team_id: TeamId(row.get("team_id")),
                    url: row.get("url"),
                    payload: row.get("payload"),
                    signing_secret: row.get("signing_secret"),
                    status: parse_column("callbacks.status", row.get("status"))?,
                    attempts: row.get::<_, i32>("attempts") as u32,
                    retry_window_start: row.get("retry_window_start"),
                };
                Ok((delivery.callback_id, delivery))
            })
            .collect()
    }

    /// Claims attempt `attempt` of a pending callback for `lease`, so no
    /// other worker sends it meanwhile.
    pub async fn claim_delivery(
        &self,
        callback_id: CallbackId,
        attempt: u32,
        lease: Duration,
    ) -> Result<Claim> {
        let claims = self
            .claim_deliveries(&[(callback_id, attempt)], lease)
            .await?;
        Ok(claims[0])
    }

    /// Claims many attempts in one statement, as [`Store::claim_delivery`]
    /// does for one, and returns the claims in the order given. A repeat of
    /// an attempt earlier in the slice is held by that earlier one.
    pub async fn claim_deliveries(
        &self,
        attempts: &[(CallbackId, u32)],
        lease: Duration,
    ) -> Result<Vec<Claim>> {
        let ids: Vec<uuid::Uuid> = attempts.iter().map(|(id, _)| id.0).collect();
        let numbers: Vec<i32> = attempts.iter().map(|(_, n)| *n as i32).collect();
        let client = self.pool.get().await?;
        let rows = crate::cached::query(
            &client,
            "UPDATE callbacks c SET lease_until = now() + make_interval(secs => $3)
                 FROM UNNEST($1::uuid[], $2::int[]) AS v (id, attempt)
                 WHERE c.id = v.id AND c.status = 'pending' AND c.attempts = v.attempt
                   AND (c.lease_until IS NULL OR c.lease_until <= now())
                 RETURNING c.id, c.attempts, c.lease_until",
            &[&ids, &numbers, &lease.as_secs_f64()],
        )
        .await?;
        let mut claimed = leases_by_attempt(&rows);
        let mut leases = HashMap::new();
        let mut claims = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            claims.push(match claimed.remove(attempt) {
                Some(until) => {
                    leases.insert(*attempt, until);
                    Claim::Claimed
                }
                None => match leases.get(attempt) {
                    Some(until) => Claim::Held { until: *until },
                    None => Claim::Stale,
                },
            });
        }

        // Read after the update, so a lease another worker committed
        // meanwhile shows.
        let unclaimed: Vec<uuid::Uuid> = attempts
            .iter()
            .zip(&claims)
            .filter(|(_, claim)| **claim == Claim::Stale)
            .map(|((id, _), _)| id.0)
            .collect();
        if unclaimed.is_empty() {
            return Ok(claims);
        }
        let rows = crate::cached::query(
            &client,
            "SELECT id, attempts, lease_until FROM callbacks
                 WHERE id = ANY($1) AND status = 'pending' AND lease_until > now()",
            &[&unclaimed],
        )
        .await?;
        let leased = leases_by_attempt(&rows);
        for (attempt, claim) in attempts.iter().zip(claims.iter_mut()) {
            if *claim == Claim::Stale
                && let Some(until) = leased.get(attempt)
            {
                *claim = Claim::Held { until: *until };
            }
        }
        Ok(claims)
    }

    /// Records one delivery attempt, and schedules the next one on
    /// [`DeliveryResult::Retry`]. Returns `false`, and changes nothing, when
    /// the callback is no longer pending at this attempt number.
    pub async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<bool> {
        let recorded = self
            .record_deliveries(std::slice::from_ref(attempt))
            .await?;
        Ok(recorded[0])
    }

    /// Records many attempts in one transaction, as
    /// [`Store::record_delivery`] does for one, and returns whether each was
    /// recorded, in the order given. Of two equal attempts (same callback and
    /// attempt number), only the first is recorded.
    pub async fn record_deliveries(&self, attempts: &[DeliveryAttempt]) -> Result<Vec<bool>> {
        let mut seen = HashSet::new();
        let unique: Vec<&DeliveryAttempt> = attempts
            .iter()
            .filter(|attempt| seen.insert((attempt.callback_id, attempt.attempt)))
            .collect();
        let mut columns = DeliveryColumns::default();
        for attempt in &unique {
            columns.push(attempt);
        }

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let rows = crate::cached::query(
            &tx,
            "UPDATE callbacks c SET status = v.status, attempts = c.attempts + 1,
                     last_status_code = v.status_code, last_error = v.error,
                     egress_member = v.egress_member, last_attempt_at = now(),
                     lease_until = NULL,
                     delivered_at = CASE WHEN v.status = 'delivered' THEN now() END
                 FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::int[], $5::text[],
                             $6::text[])
                     AS v (id, attempt, status, status_code, error, egress_member)
                 WHERE c.id = v.id AND c.status = 'pending' AND c.attempts = v.attempt
                 RETURNING c.id, v.attempt",
            &[
                &columns.ids,
                &columns.attempts,
                &columns.statuses,
                &columns.status_codes,
                &columns.errors,
                &columns.members,
            ],
        )
        .await?;
        let updated: HashSet<(CallbackId, u32)> = rows
            .iter()
            .map(|row| {
                let number = row.get::<_, i32>("attempt") as u32;
                (CallbackId(row.get("id")), number)
            })
            .collect();
        if updated.is_empty() {
            return Ok(vec![false; attempts.len()]);
        }

        let mut history = DeliveryColumns::default();
        let mut retries = Vec::new();
        let mut delays = Vec::new();
        for attempt in &unique {
            if !updated.contains(&(attempt.callback_id, attempt.attempt)) {
                continue;
            }
            history.push(attempt);
            if let DeliveryResult::Retry { delay, .. } = attempt.result {
                let job = JobMessage::Callback(CallbackJob {
                    callback_id: attempt.callback_id,
                    attempt: attempt.attempt + 1,
                });
                retries.push(job.to_json());
                delays.push(delay.as_secs_f64());
            }
        }
        // The history numbers attempts from 1.
        let numbers: Vec<i32> = history.attempts.iter().map(|n| n + 1).collect();
        crate::cached::execute(
            &tx,
            "INSERT INTO callback_attempts
                 (callback_id, attempt, status_code, error, duration_ms, egress_member)
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::text[], $5::int[],
                                  $6::text[])",
            &[
                &history.ids,
                &numbers,
                &history.status_codes,
                &history.errors,
                &history.durations,
                &history.members,
            ],
        )
        .await?;
        if !retries.is_empty() {
            crate::cached::execute(
                &tx,
                "INSERT INTO outbox (kind, payload, available_at)
                 SELECT 'callback', job, now() + make_interval(secs => delay)
                 FROM UNNEST($1::jsonb[], $2::float8[]) AS j (job, delay)",
                &[&retries, &delays],
            )
            .await?;
        }
        tx.commit().await?;

        let mut first = HashSet::new();
        Ok(attempts
            .iter()
            .map(|attempt| {
                let key = (attempt.callback_id, attempt.attempt);
                first.insert(key) && updated.contains(&key)
            })
            .collect())
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

/// Maps rows with `id`, `attempts` and `lease_until` columns to each
/// attempt's lease end.
fn leases_by_attempt(rows: &[tokio_postgres::Row]) -> HashMap<(CallbackId, u32), DateTime<Utc>> {
    rows.iter()
        .map(|row| {
            let attempt = (
                CallbackId(row.get("id")),
                row.get::<_, i32>("attempts") as u32,
            );
            (attempt, row.get("lease_until"))
        })
        .collect()
}

/// Delivery attempts, column by column, as they are written.
#[derive(Default)]
struct DeliveryColumns<'a> {
    ids: Vec<uuid::Uuid>,
    attempts: Vec<i32>,
    statuses: Vec<&'static str>,
    status_codes: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
    members: Vec<Option<&'a str>>,
    durations: Vec<i32>,
}

impl<'a> DeliveryColumns<'a> {
    fn push(&mut self, attempt: &'a DeliveryAttempt) {
        let (status, error) = match &attempt.result {
            DeliveryResult::Delivered => (CallbackStatus::Delivered, None),
            DeliveryResult::Retry { error, .. } => (CallbackStatus::Pending, Some(error.as_str())),
            DeliveryResult::Dead { error } => (CallbackStatus::Dead, Some(error.as_str())),
        };
        self.ids.push(attempt.callback_id.0);
        self.attempts.push(attempt.attempt as i32);
        self.statuses.push(status.as_str());
        self.status_codes.push(attempt.status_code.map(i32::from));
        self.errors.push(error);
        self.members.push(attempt.egress_member.as_deref());
        self.durations
            .push(attempt.duration.as_millis().min(i32::MAX as u128) as i32);
    }
}
