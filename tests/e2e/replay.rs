//! Replaying failed attachments and dead callbacks.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Deployment, Options, Receiver, Source, SourceFile, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_attachment_sends_a_new_callback() {
    let deployment = Deployment::start(Options::default()).await;
    // The first request is refused, as if the bucket policy were wrong.
    let source = Source::start([(
        "report.txt",
        SourceFile::new("fixed", "text/plain").failing_first(1, StatusCode::FORBIDDEN),
    )])
    .await;
    let receiver = Receiver::start([]).await;
    let (_, accepted) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("report.txt")}]}),
            None,
        )
        .await;
    let first = receiver.wait_for(1).await.remove(0);
    assert_eq!(first.json()["data"]["status"], "failed");
    assert_eq!(
        first.json()["data"]["attachments"][0]["error_code"],
        "access_denied"
    );

    let (status, replayed) = deployment
        .post(
            "/v1/replays",
            &json!({"kind": "attachments", "error_code": "not_found"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(
        replayed["replayed"], 0,
        "no attachment failed with not_found"
    );
    let (status, replayed) = deployment
        .post(
            "/v1/replays",
            &json!({"kind": "attachments", "error_code": "access_denied", "task_id": accepted["task_id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed, json!({"kind": "attachments", "replayed": 1}));

    let second = receiver.wait_for(2).await.remove(1);
    assert_eq!(second.json()["data"]["status"], "succeeded");
    assert_ne!(
        second.webhook_id, first.webhook_id,
        "a new result is a new callback"
    );
    assert_eq!(source.hits("report.txt"), 2);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replayed_callback_keeps_its_webhook_id() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([StatusCode::GONE]).await;
    deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;
    let first = receiver.wait_for(1).await.remove(0);
    let database = deployment.database().await;
    eventually(
        Duration::from_secs(10),
        "the callback to be dead",
        || async {
            let row = database
                .query_one("SELECT status FROM callbacks", &[])
                .await
                .unwrap();
            (row.get::<_, &str>(0) == "dead").then_some(())
        },
    )
    .await;

    // Another team's replay touches nothing of this team.
    let other = deployment.create_team("other").await;
    let response = deployment
        .http
        .post(format!("http://{}/v1/replays", deployment.api))
        .bearer_auth(&other.api_key)
        .json(&json!({"kind": "callbacks"}))
        .send()
        .await
        .unwrap();
    let replayed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(replayed["replayed"], 0);

    let (status, replayed) = deployment
        .post("/v1/replays", &json!({"kind": "callbacks"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["replayed"], 1);
    let second = receiver.wait_for(2).await.remove(1);
    assert_eq!(second.webhook_id, first.webhook_id);
    assert_eq!(second.body, first.body);
    let row = eventually(
        Duration::from_secs(10),
        "the callback to be delivered",
        || async {
            let row = database
                .query_one("SELECT status, replays FROM callbacks", &[])
                .await
                .unwrap();
            (row.get::<_, &str>(0) == "delivered").then_some(row)
        },
    )
    .await;
    assert_eq!(row.get::<_, i32>(1), 1);
    deployment.stop().await;
}
