//! Queue and exchange names, and their idempotent declaration.
//!
//! Each job kind has a durable quorum work queue. Jobs are published to it
//! through the default exchange, with the queue name as routing key. A
//! message that is rejected without requeue, or that exceeds the delivery
//! limit, goes to the dead-letter exchange. That exchange routes it by its
//! original routing key to the kind's dead-letter queue.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The kinds of job, one work queue each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    Fetch,
    Callback,
}

impl QueueKind {
    pub const ALL: [QueueKind; 2] = [QueueKind::Fetch, QueueKind::Callback];

    /// Returns the kind's name, as stored in the outbox `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Callback => "callback",
        }
    }

    /// Parses an outbox `kind` value, returning `None` for an unknown kind.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// Queue and exchange names of one deployment, and its delivery limit.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    /// Creates the topology. `prefix` starts every name, and `delivery_limit`
    /// becomes the work queues' `x-delivery-limit`.
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
        }
    }

    /// Returns the work queue name of `kind`, for example `attache.fetch`.
    pub fn work_queue(&self, kind: QueueKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }

    /// Returns the dead-letter queue name of `kind`, for example
    /// `attache.fetch.dead`.
    pub fn dead_letter_queue(&self, kind: QueueKind) -> String {
        format!("{}.{}.dead", self.prefix, kind.as_str())
    }

    /// Returns the name of the dead-letter exchange that every work queue
    /// shares, for example `attache.dlx`.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// Declares every exchange, queue and binding. Declaring is idempotent,
    /// so every replica runs it at every start. RabbitMQ closes the channel
    /// if a queue already exists with different arguments.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let exchange = self.dead_letter_exchange();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;

        for kind in QueueKind::ALL {
            let dead = self.dead_letter_queue(kind);
            channel
                .queue_declare(dead.as_str().into(), durable, quorum_arguments())
                .await?;
            let work = self.work_queue(kind);
            channel
                .queue_bind(
                    dead.as_str().into(),
                    exchange.as_str().into(),
                    work.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;

            let mut arguments = quorum_arguments();
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(exchange.as_str().into()),
            );
            // RabbitMQ allows limit + 1 deliveries, then dead-letters with
            // reason `delivery_limit`. Restarts and timeouts count too.
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongUInt(self.delivery_limit),
            );
            channel
                .queue_declare(work.as_str().into(), durable, arguments)
                .await?;
        }
        Ok(())
    }
}

/// Quorum queues replicate and survive a broker node's loss, and they
/// support the delivery limit that stops a crash loop on one message.
fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_start_with_prefix() {
        let topology = Topology::new("t1", 5);
        assert_eq!(topology.work_queue(QueueKind::Fetch), "t1.fetch");
        assert_eq!(
            topology.dead_letter_queue(QueueKind::Callback),
            "t1.callback.dead"
        );
        assert_eq!(topology.dead_letter_exchange(), "t1.dlx");
    }

    #[test]
    fn queue_kind_parse_round_trips() {
        for kind in QueueKind::ALL {
            assert_eq!(QueueKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(QueueKind::parse("other"), None);
    }
}
