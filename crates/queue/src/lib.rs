//! RabbitMQ for Attaché: the queue topology, a publisher that waits for the
//! broker's confirms, and the consumer loop every worker runs.
//!
//! Messages carry ids only (see `attache_domain::JobMessage`), and the state
//! lives in PostgreSQL. A worker's handler commits its outcome and returns a
//! [`Disposition`] for the delivery, which the consumer loop turns into the
//! matching AMQP call.
//!
//! Metrics: `attache_jobs_consumed_total`, `attache_jobs_in_flight`,
//! `attache_jobs_requeued_total` and `attache_jobs_dead_lettered_total`, each
//! labelled with the job kind.

mod connect;
mod consumer;
mod metrics;
mod publisher;
mod topology;

pub use connect::connect;
pub use consumer::{
    ConsumerSettings, DeadLetterReason, Disposition, Handler, Incoming, check_consumer_timeout,
    run_consumer,
};
pub use publisher::{PublishError, Publisher};
pub use topology::{QueueKind, Topology};

/// The error type of the underlying AMQP client.
pub type AmqpError = lapin::Error;
