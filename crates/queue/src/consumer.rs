//! The consumer loop every worker runs.
//!
//! Each worker process uses one connection and one channel, with prefetch
//! equal to the worker's concurrency. Each delivery runs in its own task, so
//! up to `prefetch` jobs are in flight. The loop reconnects after any
//! connection or channel loss, after letting in-flight jobs finish and
//! commit. The broker redelivers unacknowledged deliveries and handlers skip
//! jobs whose outcome is already recorded, so no job is lost. An outcome
//! outside our database cannot be undone: a worker killed after a callback
//! POST but before recording it sends the callback again, which is why
//! callbacks are delivered at least once.
//!
//! On shutdown the consumer is cancelled first, so no new delivery arrives,
//! then in-flight jobs get until the deadline to finish and acknowledge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connect::connect;
use crate::metrics::{CONSUMED, DEAD_LETTERED, IN_FLIGHT, REQUEUED};
use crate::topology::{QueueKind, Topology};

/// The action the consumer loop takes on a delivery once its handler returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Acknowledge, because the outcome is committed or the job was stale.
    Ack,
    /// Return the message to its queue, because our own infrastructure
    /// failed (for example, the database is unreachable). The quorum queue's
    /// delivery limit counts each `basic.reject` with requeue, so a message
    /// that keeps failing ends in the dead-letter queue instead of looping.
    Requeue,
    /// Reject without requeue, which routes the message to the dead-letter
    /// queue, because it can never be processed. The reason labels the
    /// `attache_jobs_dead_lettered_total` metric.
    DeadLetter(DeadLetterReason),
}

/// Why a worker dead-lettered a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The body is not a job this build can read.
    Undecodable,
    /// The message was delivered so often (crashes, timeouts, outages) that
    /// the worker gave up on it and recorded a final state.
    DeliveryLimit,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// One delivery as a handler sees it.
pub struct Incoming<'a> {
    pub body: &'a [u8],
    /// Earlier deliveries of this message, from the quorum queue's
    /// `x-delivery-count` header; 0 on the first delivery.
    pub redeliveries: u32,
}

/// A worker's job logic, called once per delivery.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, incoming: Incoming<'_>) -> Disposition;
}

/// Consumer settings of one worker.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub amqp_url: String,
    /// Connection name shown in the broker's connection list.
    pub connection_name: String,
    pub topology: Topology,
    pub kind: QueueKind,
    /// Maximum number of unacknowledged deliveries (`basic.qos` prefetch),
    /// and so of jobs in flight at once.
    pub prefetch: u16,
    /// Maximum time in-flight jobs may run after shutdown starts.
    pub shutdown_deadline: Duration,
    /// Pause before requeueing, so an outage of our own database does not
    /// spend a message's delivery limit in a tight loop.
    pub requeue_delay: Duration,
    /// How long a delivery whose handler hit an infrastructure failure is
    /// held and retried before it is returned to the queue.
    pub hold_on_failure: Duration,
}

/// The reason a consumer stopped before shutdown.
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker cancelled the consumer, for example because its queue was deleted")]
    Cancelled,
}

/// Consumes until `shutdown` fires, reconnecting after every loss. `ready`
/// is true while the consumer is attached to its queue.
pub async fn run_consumer(
    settings: ConsumerSettings,
    handler: Arc<dyn Handler>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let queue = settings.topology.work_queue(settings.kind);
    register_series(settings.kind);
    loop {
        let Some(connection) =
            connect(&settings.amqp_url, &settings.connection_name, &shutdown).await
        else {
            break;
        };
        let outcome = consume(&settings, &connection, &handler, &ready, &shutdown).await;
        ready.store(false, Ordering::Relaxed);
        let _ = connection.close(200, "shutting down".into()).await;
        match outcome {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, queue, "lost the RabbitMQ consumer, reconnecting");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    tracing::info!(queue, "consumer stopped");
}

/// Consumes on one connection. Returns `Ok` after a clean shutdown and an
/// error when the channel, connection or consumer is lost.
async fn consume(
    settings: &ConsumerSettings,
    connection: &Connection,
    handler: &Arc<dyn Handler>,
    ready: &AtomicBool,
    shutdown: &CancellationToken,
) -> Result<(), ConsumeError> {
    let channel = connection.create_channel().await?;
    settings.topology.declare(&channel).await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let queue = settings.topology.work_queue(settings.kind);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(queue, prefetch = settings.prefetch, "consuming");

    let mut in_flight = JoinSet::new();
    let result = loop {
        while in_flight.try_join_next().is_some() {}
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    in_flight.spawn(settle(
                        delivery,
                        handler.clone(),
                        settings.kind,
                        settings.requeue_delay,
                        settings.hold_on_failure,
                    ));
                }
                Some(Err(error)) => break Err(error.into()),
                None => break Err(ConsumeError::Cancelled),
            },
            () = shutdown.cancelled() => break Ok(()),
        }
    };

    if result.is_ok() {
        drain(
            &channel,
            consumer.tag(),
            in_flight,
            settings.shutdown_deadline,
        )
        .await;
        let _ = channel.close(200, "shutting down".into()).await;
    } else {
        // The channel is gone, so these jobs cannot be acknowledged, but a
        // job that already sent its callback must still record it, or the
        // redelivery would send it again. Let them finish and commit.
        let pending = in_flight.len();
        let finished = tokio::time::timeout(settings.shutdown_deadline, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                pending,
                "in-flight jobs outlived the connection loss; aborting them"
            );
        }
    }
    result
}

/// Stops new deliveries and waits for in-flight jobs until the deadline.
/// Jobs still running then are aborted unacknowledged, and the broker
/// redelivers them once the channel closes.
async fn drain(
    channel: &Channel,
    tag: lapin::types::ShortString,
    mut in_flight: JoinSet<()>,
    deadline: Duration,
) {
    if let Err(error) = channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        tracing::warn!(%error, "failed to cancel the consumer");
    }
    while in_flight.try_join_next().is_some() {}
    let pending = in_flight.len();
    tracing::info!(pending, "waiting for in-flight jobs");
    let waited = tokio::time::timeout(deadline, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            abandoned = in_flight.len(),
            "shutdown deadline passed, aborting jobs for redelivery"
        );
        in_flight.abort_all();
    }
}

/// Runs the handler and applies its disposition to the delivery.
async fn settle(
    delivery: Delivery,
    handler: Arc<dyn Handler>,
    kind: QueueKind,
    requeue_delay: Duration,
    hold_on_failure: Duration,
) {
    let queue = kind.as_str();
    CONSUMED.with_label_values(&[queue]).inc();
    let incoming = || Incoming {
        body: &delivery.data,
        redeliveries: redeliveries(&delivery),
    };
    let disposition = {
        // The guard also counts down when shutdown aborts this task.
        let _in_flight = InFlight::enter(queue);
        let mut disposition = handler.handle(incoming()).await;
        // Our own database failing is usually brief: hold the message and
        // try again with back-off, so an outage does not spend its delivery
        // limit, and return it to the queue only after `hold_on_failure`.
        let started = tokio::time::Instant::now();
        let mut delay = requeue_delay.min(Duration::from_millis(500));
        while disposition == Disposition::Requeue && started.elapsed() < hold_on_failure {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            disposition = handler.handle(incoming()).await;
        }
        disposition
    };
    let settled = match disposition {
        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await,
        Disposition::Requeue => {
            REQUEUED.with_label_values(&[queue]).inc();
            tokio::time::sleep(requeue_delay).await;
            delivery.reject(BasicRejectOptions { requeue: true }).await
        }
        Disposition::DeadLetter(reason) => {
            DEAD_LETTERED
                .with_label_values(&[queue, reason.as_str()])
                .inc();
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
    };
    // `Ok(false)` means the channel is gone, so the broker will redeliver.
    match settled {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            ?disposition,
            "channel closed before settling, so the job will be redelivered"
        ),
        Err(error) => {
            tracing::warn!(%error, ?disposition, "failed to settle a delivery, so the job will be redelivered")
        }
    }
}

/// Logs a warning when a job could stay unacknowledged longer than the
/// broker's consumer timeout, which would close the channel and redeliver
/// the job while it still runs. `job_deadline` is the worker's longest job,
/// including the time a delivery is held through a database outage.
pub fn check_consumer_timeout(job_deadline: Duration, consumer_timeout: Duration) -> bool {
    let outlives = job_deadline >= consumer_timeout;
    if outlives {
        tracing::warn!(
            job_deadline = ?job_deadline,
            consumer_timeout = ?consumer_timeout,
            "a job could outlive the broker's consumer_timeout: raise consumer_timeout in rabbitmq.conf or shorten the worker's timeouts"
        );
    }
    outlives
}

/// Creates every series of this job kind at zero, so dashboards and alerts
/// see zero rather than no data before the first event.
fn register_series(kind: QueueKind) {
    let queue = kind.as_str();
    CONSUMED.with_label_values(&[queue]).inc_by(0);
    REQUEUED.with_label_values(&[queue]).inc_by(0);
    IN_FLIGHT.with_label_values(&[queue]).add(0);
    for reason in [
        DeadLetterReason::Undecodable,
        DeadLetterReason::DeliveryLimit,
    ] {
        DEAD_LETTERED
            .with_label_values(&[queue, reason.as_str()])
            .inc_by(0);
    }
}

/// Reads the quorum queue's `x-delivery-count` header: the number of
/// earlier deliveries, absent on the first.
fn redeliveries(delivery: &Delivery) -> u32 {
    use lapin::types::AMQPValue;
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    let count = match value {
        Some(AMQPValue::LongLongInt(count)) => count,
        Some(AMQPValue::LongInt(count)) => i64::from(count),
        Some(AMQPValue::LongUInt(count)) => i64::from(count),
        Some(AMQPValue::ShortInt(count)) => i64::from(count),
        Some(AMQPValue::ShortUInt(count)) => i64::from(count),
        Some(AMQPValue::ShortShortInt(count)) => i64::from(count),
        Some(AMQPValue::ShortShortUInt(count)) => i64::from(count),
        _ => 0,
    };
    u32::try_from(count).unwrap_or(0)
}

/// Guard that counts one delivery in `attache_jobs_in_flight` until dropped.
struct InFlight(&'static str);

impl InFlight {
    fn enter(queue: &'static str) -> Self {
        IN_FLIGHT.with_label_values(&[queue]).inc();
        Self(queue)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with_label_values(&[self.0]).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_timeout_check_flags_long_jobs() {
        let timeout = Duration::from_secs(1800);
        assert!(!check_consumer_timeout(Duration::from_secs(700), timeout));
        assert!(check_consumer_timeout(Duration::from_secs(1800), timeout));
        assert!(check_consumer_timeout(Duration::from_secs(3600), timeout));
    }
}
