//! Tests of messages other than valid new jobs: undecodable messages,
//! duplicate jobs, jobs for unknown attachments and a group delivered again
//! after part of it was recorded.

use std::time::Duration;

use attache_domain::{AttachmentId, FetchGroupJob, FetchJob, JobMessage, TaskId};
use attache_queue::{Publisher, QueueKind};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Deployment, Options, Receiver, Source, SourceFile, eventually};

async fn publish(deployment: &Deployment, kind: QueueKind, body: Vec<u8>) {
    let connection = lapin::Connection::connect(&deployment.amqp_url, Default::default())
        .await
        .expect("RabbitMQ accepts a connection");
    let publisher = Publisher::open(&connection, deployment.topology.clone())
        .await
        .expect("a publishing channel opens");
    publisher
        .publish_batch(&[(kind, body)])
        .await
        .expect("the broker confirms");
    let _ = connection.close(200, "done".into()).await;
}

/// Publishes `job` with an `x-delivery-count` header, as RabbitMQ sets it
/// on a message delivered `count` times before.
async fn publish_redelivered(deployment: &Deployment, job: &JobMessage, count: i64) {
    use lapin::options::BasicPublishOptions;
    use lapin::types::{AMQPValue, FieldTable};

    let connection = lapin::Connection::connect(&deployment.amqp_url, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(count));
    channel
        .basic_publish(
            "".into(),
            deployment
                .topology
                .work_queue(QueueKind::Fetch)
                .as_str()
                .into(),
            BasicPublishOptions::default(),
            &job.encode(),
            lapin::BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
}

/// Writes a task and its attachments straight to the database, without an
/// outbox row, so the only jobs for them are the ones a test publishes.
/// Returns the task's id and its attachments' ids, in `uris` order.
async fn insert_task(
    deployment: &Deployment,
    callback_url: &str,
    uris: &[String],
) -> (TaskId, Vec<AttachmentId>) {
    let task_id = TaskId::new();
    let ids: Vec<AttachmentId> = uris.iter().map(|_| AttachmentId::new()).collect();
    let database = deployment.database().await;
    database
        .execute(
            "INSERT INTO tasks (id, team_id, callback_url, request_hash) VALUES ($1, $2, $3, '')",
            &[&task_id.0, &deployment.team.team_id.0, &callback_url],
        )
        .await
        .unwrap();
    for (position, (id, uri)) in ids.iter().zip(uris).enumerate() {
        database
            .execute(
                "INSERT INTO attachments (id, task_id, position, uri, provider)
                 VALUES ($1, $2, $3, $4, 'http')",
                &[&id.0, &task_id.0, &(position as i32), uri],
            )
            .await
            .unwrap();
    }
    (task_id, ids)
}

/// Returns the group message of the first attempts of `ids`.
fn first_attempts(ids: &[AttachmentId]) -> JobMessage {
    let jobs = ids
        .iter()
        .map(|&attachment_id| FetchJob {
            attachment_id,
            attempt: 0,
        })
        .collect();
    JobMessage::FetchGroup(FetchGroupJob { jobs })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_messages_are_dead_lettered() {
    let deployment = Deployment::start(Options::default()).await;
    publish(&deployment, QueueKind::Fetch, b"not a job".to_vec()).await;
    publish(
        &deployment,
        QueueKind::Callback,
        br#"{"version":99,"type":"callback"}"#.to_vec(),
    )
    .await;
    for kind in QueueKind::ALL {
        eventually(
            Duration::from_secs(15),
            "the message to be dead-lettered",
            || async { (deployment.dead_letter_depth(kind).await == 1).then_some(()) },
        )
        .await;
    }
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_and_unknown_jobs_change_nothing() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([]).await;
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    receiver.wait_for(1).await;

    let attachment_id: AttachmentId = accepted["attachments"][0]["attachment_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for job in [
        FetchJob {
            attachment_id,
            attempt: 0,
        },
        FetchJob {
            attachment_id: AttachmentId::new(),
            attempt: 0,
        },
    ] {
        publish(
            &deployment,
            QueueKind::Fetch,
            JobMessage::Fetch(job).encode(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(
        source.hits("a.txt"),
        1,
        "the duplicate job did not fetch again"
    );
    assert_eq!(receiver.received().len(), 1, "no second callback");
    assert_eq!(deployment.dead_letter_depth(QueueKind::Fetch).await, 0);
    let attempts: i32 = deployment
        .database()
        .await
        .query_one("SELECT attempts FROM attachments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_delivered_too_often_fails_for_good() {
    let deployment = Deployment::start(Options::default()).await;
    let receiver = Receiver::start([]).await;
    // The only job for the attachment is the one published below.
    let never = ["http://127.0.0.1:9/never".to_owned()];
    let (_, ids) = insert_task(&deployment, &receiver.url(), &never).await;
    let attachment_id = ids[0];

    // The job claims to have been delivered as often as the queue allows,
    // as after repeated worker crashes.
    let job = JobMessage::Fetch(FetchJob {
        attachment_id,
        attempt: 0,
    });
    publish_redelivered(&deployment, &job, 5).await;

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "failed");
    assert_eq!(
        payload["data"]["attachments"][0]["error_code"],
        "processing_failed"
    );
    eventually(
        Duration::from_secs(10),
        "the job to be dead-lettered",
        || async { (deployment.dead_letter_depth(QueueKind::Fetch).await == 1).then_some(()) },
    )
    .await;
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_group_skips_recorded_jobs() {
    let deployment = Deployment::start(Options::default()).await;
    let names = ["done.txt", "b.txt", "c.txt"];
    let source = Source::start(names.map(|name| (name, SourceFile::new(name, "text/plain")))).await;
    let receiver = Receiver::start([]).await;

    // The task's first attachment was recorded before the worker holding
    // the group stopped.
    let uris: Vec<String> = names.iter().map(|name| source.url(name)).collect();
    let (_, ids) = insert_task(&deployment, &receiver.url(), &uris).await;
    let database = deployment.database().await;
    database
        .execute(
            "UPDATE attachments SET status = 'succeeded', attempts = 1, size_bytes = 8,
                 sha256 = 'recorded', storage_key = 'earlier' WHERE id = $1",
            &[&ids[0].0],
        )
        .await
        .unwrap();

    let group = first_attempts(&ids);
    publish(&deployment, QueueKind::Fetch, group.encode()).await;

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "succeeded");
    let attachments = payload["data"]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 3);
    assert_eq!(
        attachments[0]["sha256"], "recorded",
        "the recorded job kept its outcome"
    );
    assert_eq!(
        source.hits("done.txt"),
        0,
        "the recorded job did not fetch again"
    );
    assert_eq!(source.hits("b.txt"), 1);
    assert_eq!(source.hits("c.txt"), 1);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_up_group_spares_retried_jobs() {
    let deployment = Deployment::start(Options::default()).await;
    let receiver = Receiver::start([]).await;

    // The task's first attachment still waits for its first attempt. Its
    // second had one and waits for a retry, which another job carries.
    let never = vec!["http://127.0.0.1:9/never".to_owned(); 2];
    let (task_id, ids) = insert_task(&deployment, &receiver.url(), &never).await;
    let database = deployment.database().await;
    database
        .execute(
            "UPDATE attachments SET attempts = 1 WHERE id = $1",
            &[&ids[1].0],
        )
        .await
        .unwrap();

    let group = first_attempts(&ids);
    publish_redelivered(&deployment, &group, 5).await;
    eventually(
        Duration::from_secs(10),
        "the group to be dead-lettered",
        || async { (deployment.dead_letter_depth(QueueKind::Fetch).await == 1).then_some(()) },
    )
    .await;

    let rows = database
        .query(
            "SELECT status, attempts, error_code FROM attachments WHERE task_id = $1
             ORDER BY position",
            &[&task_id.0],
        )
        .await
        .unwrap();
    let state = |index: usize| {
        let row = &rows[index];
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, Option<String>>(2),
        )
    };
    assert_eq!(
        state(0),
        ("failed".to_owned(), 1, Some("processing_failed".to_owned()))
    );
    assert_eq!(
        state(1),
        ("pending".to_owned(), 1, None),
        "the retried attachment is left to its retry"
    );
    deployment.stop().await;
}
