//! One callback job, in stages: decode, load, sign and send, classify,
//! record.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use attache_domain::{CallbackJob, JobMessage, RetryPolicy};
use attache_egress::{Egress, SendError};
use attache_queue::{DeadLetterReason, Disposition, Handler, Incoming};
use attache_store::callbacks::{Claim, Delivery, DeliveryAttempt, DeliveryResult};
use attache_store::{Store, StoreError};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tracing::{Instrument, Level};
use url::Url;

use crate::limiter::HostLimiter;
use crate::metrics::{ATTEMPT_SECONDS, ATTEMPTS};
use crate::reach::Reach;
use crate::signing::SigningKey;

/// How long a delivery held back by the per-host limit waits.
const POSTPONE_DELAY: Duration = Duration::from_secs(1);

/// Everything a callback job needs.
pub struct CallbackHandler {
    pub store: Store,
    /// The jobs' store calls, in batches.
    pub calls: crate::batch::Calls,
    pub egress: Egress,
    /// The address families the egress members connect over.
    pub reach: Reach,
    pub retry: RetryPolicy,
    pub limiter: HostLimiter,
    /// Deliveries of one message after which the worker gives it up.
    pub give_up_after: u32,
}

/// The result of one POST.
struct Sent {
    status_code: Option<u16>,
    /// `None` when the customer responded 2xx.
    error: Option<String>,
    /// No later attempt can succeed: 410 Gone, a destination the guard
    /// denies, or an IP literal that no egress member can connect to.
    final_error: bool,
    /// The delay a 429 or 503 response asked for.
    retry_after: Option<Duration>,
    egress_member: Option<String>,
}

#[async_trait]
impl Handler for CallbackHandler {
    async fn handle(&self, incoming: Incoming<'_>) -> Disposition {
        let job = match JobMessage::decode(incoming.body) {
            Ok(JobMessage::Callback(job)) => job,
            Ok(other) => {
                tracing::error!(
                    ?other,
                    "a non-callback job reached the callback queue; dead-lettering it"
                );
                return Disposition::DeadLetter(DeadLetterReason::Undecodable);
            }
            Err(error) => {
                tracing::error!(%error, "undecodable callback message; dead-lettering it");
                return Disposition::DeadLetter(DeadLetterReason::Undecodable);
            }
        };
        let span =
            tracing::info_span!("callback", callback_id = %job.callback_id, attempt = job.attempt);
        if incoming.redeliveries >= self.give_up_after {
            return match self.give_up(job).instrument(span).await {
                Ok(()) => Disposition::DeadLetter(DeadLetterReason::DeliveryLimit),
                Err(_) => Disposition::Requeue,
            };
        }
        match self.process(job).instrument(span).await {
            Ok(()) => Disposition::Ack,
            Err(error) => {
                tracing::warn!(%error, callback_id = %job.callback_id, "database unavailable; returning the job to the queue");
                Disposition::Requeue
            }
        }
    }
}

impl CallbackHandler {
    /// Marks the callback dead after its job was delivered too often, which
    /// means it keeps crashing or outliving workers; the message then goes
    /// to the dead-letter queue, and the callback can be replayed.
    async fn give_up(&self, job: CallbackJob) -> Result<(), StoreError> {
        let Some(delivery) = self.store.delivery(job.callback_id).await? else {
            return Ok(());
        };
        if delivery.status.is_final() {
            return Ok(());
        }
        tracing::error!(
            redeliveries = self.give_up_after,
            "callback job delivered too often; marking it dead"
        );
        ATTEMPTS.with_label_values(&["dead"]).inc();
        self.store
            .record_delivery(&DeliveryAttempt {
                callback_id: delivery.callback_id,
                attempt: delivery.attempts,
                status_code: None,
                duration: Duration::ZERO,
                egress_member: None,
                result: DeliveryResult::Dead {
                    error: "processing_failed: delivering this callback failed repeatedly inside Attaché".to_owned(),
                },
            })
            .await?;
        Ok(())
    }

    async fn process(&self, job: CallbackJob) -> Result<(), StoreError> {
        let Some(delivery) = self.calls.load.call(job.callback_id).await? else {
            tracing::warn!("job names an unknown callback; dropping it");
            return Ok(());
        };
        if delivery.status.is_final() || delivery.attempts != job.attempt {
            ATTEMPTS.with_label_values(&["stale"]).inc();
            tracing::debug!(status = %delivery.status, "stale job; skipping");
            return Ok(());
        }

        let host = Url::parse(&delivery.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        let Some(_slot) = self.limiter.try_acquire(&host) else {
            ATTEMPTS.with_label_values(&["postponed"]).inc();
            tracing::debug!(host, "host at its delivery limit; postponing");
            return self
                .store
                .postpone_delivery(job.callback_id, job.attempt, POSTPONE_DELAY)
                .await;
        };

        match self
            .calls
            .claim
            .call((job.callback_id, job.attempt))
            .await?
        {
            Claim::Claimed => {}
            Claim::Stale => {
                ATTEMPTS.with_label_values(&["stale"]).inc();
                return Ok(());
            }
            // Another copy of this job is being sent. If that worker dies,
            // this copy takes over once the lease has expired.
            Claim::Held { until } => {
                let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                ATTEMPTS.with_label_values(&["postponed"]).inc();
                return self
                    .store
                    .postpone_delivery(job.callback_id, job.attempt, wait + POSTPONE_DELAY)
                    .await;
            }
        }

        let started = Instant::now();
        let sent = self.send(&delivery).await;
        let duration = started.elapsed();
        let result = self.classify(&delivery, &sent);
        let outcome = match result {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        };
        ATTEMPTS.with_label_values(&[outcome]).inc();
        ATTEMPT_SECONDS
            .with_label_values(&[outcome])
            .observe(duration.as_secs_f64());
        log_attempt(&delivery, &sent, &result, outcome);

        self.calls
            .record
            .call(DeliveryAttempt {
                callback_id: delivery.callback_id,
                attempt: job.attempt,
                status_code: sent.status_code,
                duration,
                egress_member: sent.egress_member,
                result,
            })
            .await?;
        Ok(())
    }

    /// Signs and POSTs the callback once.
    async fn send(&self, delivery: &Delivery) -> Sent {
        let failed = |member: Option<String>, error: String, final_error: bool| Sent {
            status_code: None,
            error: Some(error),
            final_error,
            retry_after: None,
            egress_member: member,
        };
        let key = match SigningKey::from_secret(&delivery.signing_secret) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(%error, team_id = %delivery.team_id, "cannot sign the callback");
                return failed(None, error.to_string(), false);
            }
        };
        let Ok(url) = Url::parse(&delivery.url) else {
            return failed(None, "the callback URL is not a valid URL".to_owned(), true);
        };
        // Members are fixed at start, so a family no member has stays
        // unreachable on every later attempt.
        if let Err(error) = self.reach.check(&url) {
            return failed(None, error, true);
        }
        let webhook_id = delivery.callback_id.webhook_id();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = key.sign(&webhook_id, timestamp, delivery.payload.as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("webhook-id", header_value(&webhook_id));
        headers.insert("webhook-timestamp", header_value(&timestamp.to_string()));
        headers.insert("webhook-signature", header_value(&signature));

        let sent = self
            .egress
            .post(url, headers, Bytes::from(delivery.payload.clone()))
            .await;
        match sent.result {
            Ok(response) => {
                let status = response.status();
                Sent {
                    status_code: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("the endpoint answered HTTP {status}")),
                    final_error: status == reqwest::StatusCode::GONE,
                    retry_after: retry_after(&response),
                    egress_member: sent.member,
                }
            }
            Err(SendError::Forbidden(denied)) => failed(
                sent.member,
                format!("destination_forbidden: {denied}"),
                true,
            ),
            Err(SendError::Http(error)) => failed(sent.member, transport_error(error), false),
            Err(error) => failed(sent.member, error.to_string(), false),
        }
    }

    fn classify(&self, delivery: &Delivery, sent: &Sent) -> DeliveryResult {
        let Some(error) = &sent.error else {
            return DeliveryResult::Delivered;
        };
        if sent.status_code == Some(410) {
            return DeliveryResult::Dead {
                error: "the endpoint answered HTTP 410 Gone, which stops delivery of this callback"
                    .to_owned(),
            };
        }
        if sent.final_error {
            return DeliveryResult::Dead {
                error: error.clone(),
            };
        }
        let age = (chrono::Utc::now() - delivery.retry_window_start)
            .to_std()
            .unwrap_or(Duration::ZERO);
        match self.retry.next_delay(delivery.attempts + 1, age) {
            Some(delay) => DeliveryResult::Retry {
                error: error.clone(),
                // Retry-After may lengthen a delay, up to the policy's
                // longest, but never shorten it.
                delay: sent
                    .retry_after
                    .map_or(delay, |asked| delay.max(asked.min(self.retry.max_delay))),
            },
            None => DeliveryResult::Dead {
                error: format!("{error}; no attempts left"),
            },
        }
    }
}

/// Logs a finished attempt at the level its outcome calls for.
fn log_attempt(delivery: &Delivery, sent: &Sent, result: &DeliveryResult, outcome: &str) {
    let error = match result {
        DeliveryResult::Delivered => None,
        DeliveryResult::Retry { error, .. } | DeliveryResult::Dead { error } => Some(error),
    };
    macro_rules! attempt_finished {
        ($level:expr) => {
            tracing::event!(
                $level,
                task_id = %delivery.task_id,
                team_id = %delivery.team_id,
                outcome,
                status_code = sent.status_code,
                egress_member = sent.egress_member,
                error,
                "callback attempt finished"
            )
        };
    }
    match attempt_level(result, sent.final_error) {
        Level::ERROR => attempt_finished!(Level::ERROR),
        Level::WARN => attempt_finished!(Level::WARN),
        _ => attempt_finished!(Level::INFO),
    }
}

/// Chooses the log level of a finished attempt. A retry is a warning. A
/// callback that the endpoint or its URL ended (410 Gone, a forbidden or
/// unreachable destination) is one too, because its customer must act and
/// no operator can help. A callback that ran out of attempts is an error:
/// an operator decides whether to replay it.
fn attempt_level(result: &DeliveryResult, final_error: bool) -> Level {
    match result {
        DeliveryResult::Delivered => Level::INFO,
        DeliveryResult::Retry { .. } => Level::WARN,
        DeliveryResult::Dead { .. } if final_error => Level::WARN,
        DeliveryResult::Dead { .. } => Level::ERROR,
    }
}

/// Describes a transport failure without the URL, which may carry a token.
fn transport_error(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let error = error.without_url();
    // The whole chain, because the innermost cause, such as "Connection
    // refused", names what the customer must fix.
    let mut message = format!("the request {kind}: {error}");
    let mut cause = std::error::Error::source(&error);
    while let Some(error) = cause {
        message.push_str(&format!(": {error}"));
        cause = error.source();
    }
    message
}

/// Builds a header value from text that is ASCII by construction.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("webhook ids, timestamps and base64 signatures are ASCII")
}

/// Reads `Retry-After` from a 429 or 503 response, in seconds or as an HTTP
/// date.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let status = response.status().as_u16();
    if status != 429 && status != 503 {
        return None;
    }
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    (date.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_error_names_innermost_cause() {
        // A port that was just free on loopback, so the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("binding a loopback port succeeds")
            .port();
        let error = reqwest::get(format!("http://127.0.0.1:{port}/hooks?token=secret"))
            .await
            .expect_err("nothing listens on the port");
        let message = transport_error(error);
        assert!(
            message.starts_with("the request could not connect"),
            "{message}"
        );
        assert!(message.contains("Connection refused"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn attempt_levels_follow_outcome() {
        let retry = DeliveryResult::Retry {
            error: "the endpoint answered HTTP 500".to_owned(),
            delay: Duration::from_secs(5),
        };
        let dead = DeliveryResult::Dead {
            error: "the endpoint answered HTTP 500; no attempts left".to_owned(),
        };
        assert_eq!(
            attempt_level(&DeliveryResult::Delivered, false),
            Level::INFO
        );
        assert_eq!(attempt_level(&retry, false), Level::WARN);
        assert_eq!(attempt_level(&dead, true), Level::WARN, "410 or forbidden");
        assert_eq!(
            attempt_level(&dead, false),
            Level::ERROR,
            "no attempts left"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 04 Dec 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Fri, 04 Dec 2026 11:00:00 GMT", now),
            None,
            "a past date"
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
