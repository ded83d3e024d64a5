//! Queue and exchange names, and their idempotent declaration.
//!
//! For each job kind there is a durable quorum work queue, published to
//! through the default exchange with the queue name as routing key. A
//! message rejected without requeue, or delivered more often than the
//! delivery limit, goes to the dead-letter exchange and from there to the
//! kind's dead-letter queue, keeping its original routing key.

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

    /// The kind's name, as stored in the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Callback => "callback",
        }
    }

    /// Parses an outbox kind.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// The names of one deployment's queues.
#[derive(Clone, Debug)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
}

impl Topology {
    /// `prefix` starts every name; `delivery_limit` bounds how often one
    /// message is delivered before it is dead-lettered.
    pub fn new(prefix: impl Into<String>, delivery_limit: u32) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
        }
    }

    /// The work queue of `kind`, for example `attache.fetch`.
    pub fn work_queue(&self, kind: QueueKind) -> String {
        format!("{}.{}", self.prefix, kind.as_str())
    }

    /// The dead-letter queue of `kind`, for example `attache.fetch.dead`.
    pub fn dead_letter_queue(&self, kind: QueueKind) -> String {
        format!("{}.{}.dead", self.prefix, kind.as_str())
    }

    /// The dead-letter exchange shared by every work queue.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// Declares every exchange, queue and binding. Safe to run from every
    /// replica at every start; arguments must match existing queues.
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
            // reason `delivery_limit`; restarts and timeouts count too.
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
    fn names_carry_the_prefix() {
        let topology = Topology::new("t1", 5);
        assert_eq!(topology.work_queue(QueueKind::Fetch), "t1.fetch");
        assert_eq!(
            topology.dead_letter_queue(QueueKind::Callback),
            "t1.callback.dead"
        );
        assert_eq!(topology.dead_letter_exchange(), "t1.dlx");
    }

    #[test]
    fn outbox_kinds_round_trip() {
        for kind in QueueKind::ALL {
            assert_eq!(QueueKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(QueueKind::parse("other"), None);
    }
}
