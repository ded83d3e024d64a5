//! One fetch job, in stages: decode the message, load the attachment, fetch
//! it into the attachment store, classify the outcome, record it.
//!
//! A message carries one job or a group of up to 16 jobs, of one task or
//! several, which run side by side. Fetches of every message share the worker's fetch slots, so the
//! number of open sources and uploads stays bounded whatever the groups hold.
//! The message is acknowledged once all its jobs are recorded.
//!
//! Only a failure to reach our own database makes the job return to the
//! queue; every fetch failure is classified and recorded. A job whose
//! attachment is final, or whose attempt number the row has passed, is a
//! duplicate and is acknowledged without fetching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use attache_domain::{
    AttachmentId, AttachmentRef, ErrorCode, FetchJob, JobMessage, Provider, RetryPolicy,
};
use attache_queue::{DeadLetterReason, Disposition, Handler, Incoming};
use attache_store::fetches::{FetchAttempt, FetchResult, FetchTarget, Recorded};
use attache_store::{Store, StoreError};
use futures_util::StreamExt;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::access;
use crate::fetcher::{FetchError, FetchRequest, Fetchers, ObjectStream};
use crate::metrics::{FETCH_BYTES, FETCH_SECONDS, FETCHES, InFlight};
use crate::storage::AttachmentStore;
use attache_store::batch::Batcher;

/// Everything a fetch job needs.
pub struct FetchHandler {
    pub store: Store,
    /// Loads attachments in batches; see [`crate::batch`].
    pub loader: Batcher<AttachmentId, Option<FetchTarget>>,
    /// Records outcomes in batches.
    pub recorder: Batcher<FetchAttempt, Recorded>,
    pub fetchers: Fetchers,
    pub attachments: Arc<dyn AttachmentStore>,
    pub retry: RetryPolicy,
    pub max_bytes: u64,
    /// Deliveries of one message after which the worker gives it up.
    pub give_up_after: u32,
    /// Fetches that may run at once, whatever number of messages carries
    /// them.
    pub fetch_slots: Semaphore,
    /// Max wait for a fetch slot before the job is postponed, so that a
    /// message of many jobs is acknowledged within the consumer timeout.
    pub slot_wait_limit: Duration,
}

/// Delay before a postponed job is queued again.
const POSTPONE_DELAY: Duration = Duration::from_secs(1);

/// A stored object's facts.
struct Stored {
    size_bytes: u64,
    sha256: String,
    content_type: Option<String>,
    storage_key: String,
}

#[async_trait]
impl Handler for FetchHandler {
    async fn handle(&self, incoming: Incoming<'_>) -> Disposition {
        let jobs = match JobMessage::decode(incoming.body) {
            Ok(JobMessage::Fetch(job)) => vec![job],
            Ok(JobMessage::FetchGroup(group)) => group.jobs,
            Ok(other) => {
                tracing::error!(
                    ?other,
                    "a non-fetch job reached the fetch queue; dead-lettering it"
                );
                return Disposition::DeadLetter(DeadLetterReason::Undecodable);
            }
            Err(error) => {
                tracing::error!(%error, "undecodable fetch message; dead-lettering it");
                return Disposition::DeadLetter(DeadLetterReason::Undecodable);
            }
        };
        let give_up = incoming.redeliveries >= self.give_up_after;
        let finished = join_all(jobs.into_iter().map(|job| self.run(job, give_up))).await;
        // The message returns to the queue if any of its jobs could not be
        // recorded. On redelivery, the jobs already recorded are stale.
        if finished.contains(&false) {
            Disposition::Requeue
        } else if give_up {
            Disposition::DeadLetter(DeadLetterReason::DeliveryLimit)
        } else {
            Disposition::Ack
        }
    }
}

impl FetchHandler {
    /// Runs one job of a message and returns whether its outcome, if any,
    /// is recorded.
    async fn run(&self, job: FetchJob, give_up: bool) -> bool {
        let span = tracing::info_span!(
            "fetch",
            attachment_id = %job.attachment_id,
            attempt = job.attempt,
            task_id = tracing::field::Empty,
        );
        let result = if give_up {
            self.give_up(job).instrument(span).await
        } else {
            self.process(job).instrument(span).await
        };
        match result {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, attachment_id = %job.attachment_id, "database unavailable; returning the job to the queue");
                false
            }
        }
    }

    /// Fails the attachment for good after its job was delivered too often,
    /// which means it keeps crashing or outliving workers; the message then
    /// goes to the dead-letter queue for an operator to inspect. The store
    /// calls go through the batchers, as a group's jobs arrive together.
    async fn give_up(&self, job: FetchJob) -> Result<(), StoreError> {
        let Some(target) = self.loader.call(job.attachment_id).await? else {
            return Ok(());
        };
        // A job whose attempt the row has passed is stale: a retry of the
        // attachment is queued and decides its fate.
        if target.status.is_final() || target.attempts != job.attempt {
            return Ok(());
        }
        tracing::error!(
            redeliveries = self.give_up_after,
            "fetch job delivered too often; failing the attachment"
        );
        FETCHES
            .with_label_values(&["unknown", "failed", ErrorCode::ProcessingFailed.as_str()])
            .inc();
        self.recorder
            .call(FetchAttempt {
                attachment_id: target.attachment_id,
                attempt: target.attempts,
                egress_member: None,
                result: FetchResult::Failed {
                    code: ErrorCode::ProcessingFailed,
                    message: "processing this attachment failed repeatedly; contact support with its attachment id".to_owned(),
                },
            })
            .await?;
        Ok(())
    }

    async fn process(&self, job: FetchJob) -> Result<(), StoreError> {
        let Some(target) = self.loader.call(job.attachment_id).await? else {
            tracing::warn!("job names an unknown attachment; dropping it");
            return Ok(());
        };
        if target.status.is_final() || target.attempts != job.attempt {
            tracing::debug!(status = %target.status, attempts = target.attempts, "stale job; skipping");
            FETCHES.with_label_values(&["", "stale", ""]).inc();
            return Ok(());
        }
        tracing::Span::current().record("task_id", tracing::field::display(target.task_id));

        let (provider, egress_member, outcome) = {
            let acquire = self.fetch_slots.acquire();
            let Ok(slot) = tokio::time::timeout(self.slot_wait_limit, acquire).await else {
                return self.postpone(job).await;
            };
            let _slot = slot.expect("the fetch slots are never closed");
            let _in_flight = InFlight::start();
            let started = Instant::now();
            let attempted = self.attempt(&target).await;
            FETCH_SECONDS
                .with_label_values(&[provider_label(attempted.0)])
                .observe(started.elapsed().as_secs_f64());
            attempted
        };

        let result = self.classify(&target, provider, outcome);
        let recorded = self
            .recorder
            .call(FetchAttempt {
                attachment_id: target.attachment_id,
                attempt: job.attempt,
                egress_member,
                result,
            })
            .await?;
        if let Recorded::TaskCompleted(status) = recorded {
            tracing::info!(task_id = %target.task_id, team_id = %target.team_id, %status, "task completed; callback queued");
        }
        Ok(())
    }

    /// Queues the job again, due after [`POSTPONE_DELAY`], when every fetch
    /// slot stayed busy for the wait limit. Another replica, or this one
    /// later, takes it without spending an attempt, and the message that
    /// carried it is acknowledged before the broker's consumer timeout.
    async fn postpone(&self, job: FetchJob) -> Result<(), StoreError> {
        self.store.postpone_fetch(job, POSTPONE_DELAY).await?;
        tracing::warn!(
            waited = ?self.slot_wait_limit,
            "every fetch slot stayed busy; job postponed"
        );
        FETCHES.with_label_values(&["", "postponed", ""]).inc();
        Ok(())
    }

    /// Runs one fetch; returns the provider (when the URI parsed), the
    /// egress member and the outcome.
    async fn attempt(
        &self,
        target: &FetchTarget,
    ) -> (Option<Provider>, Option<String>, Result<Stored, FetchError>) {
        let reference = match AttachmentRef::parse(&target.uri) {
            Ok(reference) => reference,
            Err(error) => {
                return (
                    None,
                    None,
                    Err(FetchError::new(error.code(), error.message())),
                );
            }
        };
        let provider = reference.provider();
        let (Some(access), Some(fetcher)) = (
            access::resolve(target, provider, |provider| {
                self.fetchers.get(provider).is_some()
            }),
            self.fetchers.get(provider),
        ) else {
            let error = FetchError::new(
                ErrorCode::UnsupportedScheme,
                format!("{provider} attachments are not enabled on this deployment"),
            );
            return (Some(provider), None, Err(error));
        };
        let request = FetchRequest {
            reference: &reference,
            team_id: target.team_id,
            access,
            max_bytes: self.max_bytes,
            bucket_owners: &target.aws.bucket_owners,
        };
        let opened = fetcher.open(&request).await;
        let stored = match opened.object {
            Ok(object) => self.store_object(target, object).await,
            Err(error) => Err(error),
        };
        (Some(provider), opened.egress_member, stored)
    }

    /// Streams an object into the attachment store, counting and hashing it;
    /// fails with `too_large` as soon as it passes the limit, whatever the
    /// source announced.
    async fn store_object(
        &self,
        target: &FetchTarget,
        object: ObjectStream,
    ) -> Result<Stored, FetchError> {
        let storage_key = format!(
            "{}/{}/{}",
            target.team_id, target.task_id, target.attachment_id
        );
        let storage_failed = |error: std::io::Error| {
            tracing::error!(%error, "attachment store write failed");
            FetchError::new(
                ErrorCode::StorageFailed,
                "the attachment store failed to write the file",
            )
        };
        let mut upload = self
            .attachments
            .begin(&storage_key)
            .await
            .map_err(storage_failed)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(FetchError::too_large(size, self.max_bytes));
            }
            hasher.update(&chunk);
            upload.write(&chunk).await.map_err(storage_failed)?;
        }
        upload.commit().await.map_err(storage_failed)?;
        Ok(Stored {
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
            content_type: object.content_type,
            storage_key,
        })
    }

    /// Turns an outcome into what is recorded: stored, failed for good, or
    /// retried after a back-off while the policy allows.
    fn classify(
        &self,
        target: &FetchTarget,
        provider: Option<Provider>,
        outcome: Result<Stored, FetchError>,
    ) -> FetchResult {
        let provider = provider_label(provider);
        let error = match outcome {
            Ok(stored) => {
                FETCHES
                    .with_label_values(&[provider, "succeeded", ""])
                    .inc();
                FETCH_BYTES
                    .with_label_values(&[provider])
                    .inc_by(stored.size_bytes);
                tracing::info!(size_bytes = stored.size_bytes, "attachment stored");
                return FetchResult::Stored {
                    size_bytes: stored.size_bytes,
                    sha256: stored.sha256,
                    content_type: stored.content_type,
                    storage_key: stored.storage_key,
                };
            }
            Err(error) => error,
        };
        let age = (chrono::Utc::now() - target.retry_window_start)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let delay = error
            .code
            .is_retryable()
            .then(|| self.retry.next_delay(target.attempts + 1, age))
            .flatten();
        let code = error.code.as_str();
        match delay {
            Some(delay) => {
                FETCHES.with_label_values(&[provider, "retry", code]).inc();
                tracing::warn!(code, message = error.message, retry_in = ?delay, "fetch failed; retry scheduled");
                FetchResult::Retry {
                    code: error.code,
                    message: error.message,
                    delay,
                }
            }
            None => {
                FETCHES.with_label_values(&[provider, "failed", code]).inc();
                tracing::info!(code, message = error.message, "attachment failed");
                FetchResult::Failed {
                    code: error.code,
                    message: error.message,
                }
            }
        }
    }
}

fn provider_label(provider: Option<Provider>) -> &'static str {
    provider.map_or("unknown", Provider::as_str)
}
