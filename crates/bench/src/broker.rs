//! The broker reference: how fast this RabbitMQ takes in and hands out the
//! fleet's kind of message on a quorum queue, measured with the fleet's
//! client library (lapin).
//!
//! A publisher on its own connection sends `messages` persistent messages in
//! batches of `batch`, waiting for every confirm of a batch before the next,
//! as the outbox relay does. At the same time a consumer on another
//! connection, with prefetch `prefetch`, acknowledges each message one by
//! one, as the workers do. The reference rate is messages divided by the
//! seconds from the first publish to the last acknowledgement. The queue is
//! deleted before and after the run.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;

#[derive(Args)]
pub struct BrokerArgs {
    /// RabbitMQ connection URL.
    #[arg(
        long,
        env = "ATTACHE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,

    /// Quorum queue to create, use and delete.
    #[arg(long)]
    queue: String,

    /// Messages to publish and consume.
    #[arg(long)]
    messages: u64,

    /// Messages published before waiting for their confirms.
    #[arg(long, default_value_t = 100)]
    batch: u64,

    /// Consumer prefetch (`basic.qos`).
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
}

#[derive(Serialize)]
struct Report {
    messages: u64,
    message_bytes: usize,
    /// Seconds from the first publish to the last confirm.
    publish_seconds: f64,
    /// Seconds from the first publish to the last acknowledgement.
    seconds: f64,
    publish_rate: f64,
    rate: f64,
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let properties = ConnectionProperties::default();
    let publishing = Connection::connect(&args.amqp_url, properties.clone())
        .await
        .with_context(|| "failed to connect to RabbitMQ: is it running (make services)?")?;
    let consuming = Connection::connect(&args.amqp_url, properties).await?;
    let publisher = publishing.create_channel().await?;
    let consumer = consuming.create_channel().await?;

    delete_queue(&publisher, &args.queue).await?;
    declare_quorum_queue(&publisher, &args.queue).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    consumer
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;

    // The shape and size of a fetch job as the relay publishes it.
    let body = |index: u64| {
        format!(
            r#"{{"version":1,"type":"fetch","attachment_id":"00000000-0000-7000-8000-{index:012}","attempt":0}}"#
        )
    };
    let started = Instant::now();
    let consumed = tokio::spawn(consume(consumer.clone(), args.queue.clone(), args.messages));
    publish(&publisher, &args, body).await?;
    let publish_seconds = started.elapsed().as_secs_f64();
    consumed.await.context("the consumer task panicked")??;
    let seconds = started.elapsed().as_secs_f64();

    delete_queue(&publisher, &args.queue).await?;
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    let report = Report {
        messages: args.messages,
        message_bytes: body(0).len(),
        publish_seconds,
        seconds,
        publish_rate: args.messages as f64 / publish_seconds,
        rate: args.messages as f64 / seconds,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn declare_quorum_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await?;
    Ok(())
}

async fn delete_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    Ok(())
}

async fn publish(
    channel: &Channel,
    args: &BrokerArgs,
    body: impl Fn(u64) -> String,
) -> anyhow::Result<()> {
    let mut index = 0;
    while index < args.messages {
        let end = (index + args.batch).min(args.messages);
        let mut confirms = Vec::new();
        for message in index..end {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    args.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body(message).as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            if !matches!(confirm.await?, Confirmation::Ack(_)) {
                bail!("RabbitMQ did not confirm a message of the reference run");
            }
        }
        index = end;
    }
    Ok(())
}

async fn consume(channel: Channel, queue: String, messages: u64) -> anyhow::Result<()> {
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for _ in 0..messages {
        let delivery = consumer
            .next()
            .await
            .context("the broker cancelled the reference consumer")??;
        if !delivery.ack(BasicAckOptions::default()).await? {
            bail!("the reference consumer's channel closed before an acknowledgement");
        }
    }
    Ok(())
}
