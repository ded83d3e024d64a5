//! Publishing with publisher confirms.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use thiserror::Error;

use crate::topology::{QueueKind, Topology};

/// The reason a batch was not confirmed. The caller publishes it again.
#[derive(Debug, Error)]
pub enum PublishError {
    #[error("RabbitMQ connection failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ rejected a message (nack)")]
    Nacked,
    #[error("RabbitMQ returned a message as unroutable: is queue `{0}` declared?")]
    Unroutable(String),
}

/// A channel in confirm mode that publishes persistent job messages.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    /// Opens a channel on `connection`, declares the topology and enables
    /// publisher confirms.
    pub async fn open(connection: &Connection, topology: Topology) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel, topology })
    }

    /// Publishes every message, then waits for all confirms. Succeeds only
    /// if the broker stored every message in its queue.
    pub async fn publish_batch(
        &self,
        messages: &[(QueueKind, Vec<u8>)],
    ) -> Result<(), PublishError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for (kind, body) in messages {
            let queue = self.topology.work_queue(*kind);
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    // Mandatory, so a message for a missing queue is returned
                    // to the publisher instead of being dropped.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?;
            confirms.push((queue, confirm));
        }
        for (queue, confirm) in confirms {
            match confirm.await? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => return Err(PublishError::Unroutable(queue)),
                Confirmation::Nack(_) | Confirmation::NotRequested => {
                    return Err(PublishError::Nacked);
                }
            }
        }
        Ok(())
    }
}
