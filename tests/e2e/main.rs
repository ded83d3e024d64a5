//! End-to-end tests: the producer, fetch-worker and callback-worker run
//! in-process against the real RabbitMQ and PostgreSQL on loopback, each test
//! with its own database and queue prefix. Sources and callback receivers
//! are small HTTP servers on loopback.
//!
//! Services: `ATTACHE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, used to create and drop
//! per-test databases) and `ATTACHE_TEST_AMQP_URL` (default the local
//! broker as guest).

mod api;
mod azure;
mod delivery;
mod egress;
mod gcs;
mod metrics;
mod pipeline;
mod queues;
mod recording;
mod replay;
mod s3;
mod support;
