//! RabbitMQ for Attaché: the queue topology, a publisher that waits for the
//! broker's confirms, and the consumer loop every worker runs.
//!
//! Messages carry ids only (see `attache_domain::JobMessage`); PostgreSQL
//! holds the state. A worker's handler classifies each delivery into a
//! [`Disposition`], and the consumer loop turns that into the matching AMQP
//! call, after the handler has committed its outcome.
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
pub use consumer::{ConsumerSettings, Disposition, Handler, run_consumer};
pub use publisher::{PublishError, Publisher};
pub use topology::{QueueKind, Topology};

/// The error type of the underlying AMQP client.
pub type AmqpError = lapin::Error;
