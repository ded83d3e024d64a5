//! Tests of a task's whole path: submission, fetches, the stored objects,
//! the task's final state and its one signed callback.

use std::time::Duration;

use attache_domain::FETCH_GROUP_SIZE;
use attache_producer::api::Limits;
use reqwest::StatusCode;
use serde_json::json;

use crate::delivery::verify_with_standardwebhooks;
use crate::support::{Deployment, Options, Receiver, Source, SourceFile, sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_task_sends_one_signed_callback() {
    let deployment = Deployment::start(Options::default()).await;
    let report = "quarterly figures\n".repeat(100);
    let image: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let oversized = vec![b'x'; 70 * 1024];
    let source = Source::start([
        ("report.txt", SourceFile::new(report.clone(), "text/plain")),
        (
            "image.bin",
            SourceFile::new(image.clone(), "application/octet-stream").chunked(),
        ),
        (
            "big-announced.bin",
            SourceFile::new(oversized.clone(), "application/octet-stream"),
        ),
        (
            "big-chunked.bin",
            SourceFile::new(oversized, "application/octet-stream").chunked(),
        ),
    ])
    .await;
    let receiver = Receiver::start([]).await;

    let (status, accepted) = deployment
        .submit(
            &json!({
                "callback_url": receiver.url(),
                "attachments": [
                    {"uri": source.url("report.txt")},
                    {"uri": source.url("image.bin")},
                    {"uri": source.url("missing.pdf")},
                    {"uri": source.url("big-announced.bin")},
                    {"uri": source.url("big-chunked.bin")},
                ],
                "metadata": {"ticket": "T-1"},
            }),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let task_id = accepted["task_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted["attachments"].as_array().unwrap().len(), 5);

    let callbacks = receiver.wait_for(1).await;
    let callback = &callbacks[0];
    let payload = callback.json();
    assert_eq!(payload["type"], "task.completed");
    assert_eq!(payload["data"]["task_id"], task_id.as_str());
    assert_eq!(payload["data"]["status"], "partially_failed");
    assert_eq!(payload["data"]["metadata"], json!({"ticket": "T-1"}));
    assert_eq!(callback.content_type, "application/json");
    assert!(
        callback.webhook_id.starts_with("msg_"),
        "{}",
        callback.webhook_id
    );

    let attachments = payload["data"]["attachments"].as_array().unwrap();
    let expected = [
        (
            "succeeded",
            None,
            Some(report.len()),
            Some(sha256_hex(report.as_bytes())),
            Some("text/plain"),
        ),
        (
            "succeeded",
            None,
            Some(image.len()),
            Some(sha256_hex(&image)),
            Some("application/octet-stream"),
        ),
        ("failed", Some("not_found"), None, None, None),
        ("failed", Some("too_large"), None, None, None),
        ("failed", Some("too_large"), None, None, None),
    ];
    for (index, (attachment, (status, code, size, sha256, content_type))) in
        attachments.iter().zip(expected).enumerate()
    {
        assert_eq!(
            attachment["attachment_id"],
            accepted["attachments"][index]["attachment_id"]
        );
        assert_eq!(
            attachment["status"], status,
            "attachment {index}: {attachment}"
        );
        assert_eq!(
            attachment["error_code"].as_str(),
            code,
            "attachment {index}: {attachment}"
        );
        assert_eq!(
            attachment["size_bytes"].as_u64(),
            size.map(|s| s as u64),
            "attachment {index}"
        );
        assert_eq!(
            attachment["sha256"].as_str(),
            sha256.as_deref(),
            "attachment {index}"
        );
        assert_eq!(
            attachment["content_type"].as_str(),
            content_type,
            "attachment {index}"
        );
        if code.is_some() {
            assert!(!attachment["error_message"].as_str().unwrap().is_empty());
        }
    }

    let verified = verify_with_standardwebhooks(&deployment.team.signing_secret, callback);
    assert_eq!(verified, Ok(payload.clone()));

    // The API returns the same outcome, and the store contains the bytes.
    let task = deployment.finished_task(&task_id).await;
    assert_eq!(task["status"], "partially_failed");
    assert_eq!(task["attachments"], payload["data"]["attachments"]);
    let stored_report = std::fs::read(
        deployment
            .store_dir
            .path()
            .join(deployment.team.team_id.to_string())
            .join(&task_id)
            .join(
                accepted["attachments"][0]["attachment_id"]
                    .as_str()
                    .unwrap(),
            ),
    )
    .expect("the first attachment is in the store");
    assert_eq!(stored_report, report.as_bytes());

    // Exactly one callback arrives, and nothing after it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 1);
    // A missing file fails at once, after one request and no retries.
    assert_eq!(source.hits("missing.pdf"), 1);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_retries_server_errors_until_success() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([(
        "flaky.txt",
        SourceFile::new("eventually here", "text/plain")
            .failing_first(2, StatusCode::SERVICE_UNAVAILABLE),
    )])
    .await;
    let receiver = Receiver::start([]).await;
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("flaky.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "succeeded");
    assert_eq!(source.hits("flaky.txt"), 3);
    let attempts: i32 = deployment
        .database()
        .await
        .query_one("SELECT attempts FROM attachments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_retries_stop_at_max_attempts() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([(
        "down.txt",
        SourceFile::new("never", "text/plain").failing_first(100, StatusCode::BAD_GATEWAY),
    )])
    .await;
    let receiver = Receiver::start([]).await;
    deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("down.txt")}]}),
            None,
        )
        .await;

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "failed");
    assert_eq!(
        payload["data"]["attachments"][0]["error_code"],
        "server_error"
    );
    assert_eq!(
        source.hits("down.txt"),
        Options::default().fetch_max_attempts
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_of_several_groups_completes_once() {
    // More attachments than one group contains, and more than the worker's
    // eight fetch slots.
    let defaults = Options::default();
    let deployment = Deployment::start(Options {
        limits: Limits {
            max_attachments_per_task: FETCH_GROUP_SIZE + 4,
            ..defaults.limits.clone()
        },
        ..defaults
    })
    .await;
    // The source serves files by static name; a test may leak a few.
    let names: Vec<&'static str> = (0..FETCH_GROUP_SIZE + 4)
        .map(|index| &*format!("{index}.txt").leak())
        .collect();
    let source = Source::start(
        names
            .iter()
            .map(|&name| (name, SourceFile::new(name, "text/plain"))),
    )
    .await;
    let receiver = Receiver::start([]).await;

    let attachments: Vec<_> = names
        .iter()
        .map(|name| json!({"uri": source.url(name)}))
        .collect();
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": attachments}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "succeeded");
    let stored = payload["data"]["attachments"].as_array().unwrap();
    assert_eq!(stored.len(), names.len());
    for (attachment, name) in stored.iter().zip(&names) {
        assert_eq!(attachment["sha256"], sha256_hex(name.as_bytes()));
        assert_eq!(source.hits(name), 1, "{name} was fetched once");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "no second callback");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_waiting_for_a_slot_is_postponed() {
    // One fetch slot, and a consumer timeout that leaves a job two seconds
    // to get it: the worker's job deadline is the 10 s fetch timeout, the
    // 60 s hold through a database outage and the 10 s database wait.
    let deployment = Deployment::start(Options {
        fetch_concurrency: 1,
        broker_consumer_timeout: Duration::from_secs(10 + 60 + 10 + 2),
        ..Options::default()
    })
    .await;
    let slow = |body| SourceFile::new(body, "text/plain").delayed(Duration::from_secs(3));
    let source = Source::start([("a.txt", slow("a")), ("b.txt", slow("b"))]).await;
    let receiver = Receiver::start([]).await;

    // Whichever job of the group takes the slot keeps it for three seconds.
    // The other waits past its limit, goes back to the queue and is fetched
    // once the slot is free.
    let (status, accepted) = deployment
        .submit(
            &json!({
                "callback_url": receiver.url(),
                "attachments": [{"uri": source.url("a.txt")}, {"uri": source.url("b.txt")}],
            }),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "succeeded");
    assert_eq!(source.hits("a.txt"), 1, "each job fetched once");
    assert_eq!(source.hits("b.txt"), 1, "each job fetched once");
    let attempts: Vec<i32> = deployment
        .database()
        .await
        .query("SELECT attempts FROM attachments ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(attempts, [1, 1], "postponing spends no attempt");
    let metrics = reqwest::get(format!("http://{}/metrics", deployment.admin[1]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"attache_fetches_total{code="",outcome="postponed",provider=""}"#),
        "{metrics}"
    );
    deployment.stop().await;
}
