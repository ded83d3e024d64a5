//! Tests of callback delivery: signatures that a real Standard Webhooks
//! client accepts, retries that keep the webhook id, 410 Gone and
//! redirects.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Deployment, Options, ReceivedCallback, Receiver, Source, SourceFile, eventually,
};

/// Verifies a received callback with the Python `standardwebhooks` package,
/// which scripts/python-env.sh installs into `.venv`. `ATTACHE_TEST_PYTHON`
/// overrides the interpreter. Returns the payload the library parsed, or its
/// error message.
pub fn verify_with_standardwebhooks(
    secret: &str,
    callback: &ReceivedCallback,
) -> Result<Value, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("ATTACHE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh to install standardwebhooks",
        python.display()
    );
    let input = json!({
        "secret": secret,
        "headers": {
            "webhook-id": callback.webhook_id,
            "webhook-timestamp": callback.timestamp,
            "webhook-signature": callback.signature,
        },
        "body": callback.body,
    });
    let mut child = Command::new(python)
        .arg(root.join("scripts/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python verifier starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_str(&stdout).expect("the verifier prints the payload")),
        Some(1) => Err(stdout),
        _ => panic!(
            "the Python verifier failed to run: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

async fn one_file_task(deployment: &Deployment, receiver: &Receiver, source: &Source) -> String {
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    accepted["task_id"].as_str().unwrap().to_owned()
}

/// Reads the callback delivery that the API shows for the task.
async fn callback_of(deployment: &Deployment, task_id: &str) -> Value {
    let (status, task) = deployment
        .get(&format!("/v1/tasks/{task_id}"), &deployment.team.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    task["callback"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standardwebhooks_rejects_a_tampered_callback() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([]).await;
    one_file_task(&deployment, &receiver, &source).await;
    let callback = receiver.wait_for(1).await.remove(0);

    assert!(verify_with_standardwebhooks(&deployment.team.signing_secret, &callback).is_ok());
    let mut tampered = callback.clone();
    tampered.body = tampered.body.replace("succeeded", "failed");
    assert!(verify_with_standardwebhooks(&deployment.team.signing_secret, &tampered).is_err());
    let other_team = deployment.create_team("other").await;
    assert!(verify_with_standardwebhooks(&other_team.signing_secret, &callback).is_err());
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callback_retry_keeps_webhook_id() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::INTERNAL_SERVER_ERROR,
    ])
    .await;
    let task_id = one_file_task(&deployment, &receiver, &source).await;

    let received = receiver.wait_for(3).await;
    assert_eq!(received[0].webhook_id, received[1].webhook_id);
    assert_eq!(received[1].webhook_id, received[2].webhook_id);
    assert_eq!(
        received[0].body, received[2].body,
        "every attempt sends the same body"
    );
    for callback in &received {
        assert!(verify_with_standardwebhooks(&deployment.team.signing_secret, callback).is_ok());
    }

    let database = deployment.database().await;
    let row = eventually(
        Duration::from_secs(10),
        "the callback to be delivered",
        || async {
            let row = database
                .query_one(
                    "SELECT status, attempts, last_status_code FROM callbacks",
                    &[],
                )
                .await
                .unwrap();
            (row.get::<_, &str>(0) == "delivered").then_some(row)
        },
    )
    .await;
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(204));
    let codes: Vec<Option<i32>> = database
        .query(
            "SELECT status_code FROM callback_attempts ORDER BY attempt",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(codes, [Some(503), Some(500), Some(204)]);

    // The task's view shows the delivery.
    let callback = callback_of(&deployment, &task_id).await;
    assert_eq!(callback["status"], "delivered", "{callback}");
    assert_eq!(callback["attempts"], 3);
    assert_eq!(callback["last_status_code"], 204);
    assert!(callback["delivered_at"].is_string(), "{callback}");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callback_410_is_dead_without_retry() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([StatusCode::GONE]).await;
    let task_id = one_file_task(&deployment, &receiver, &source).await;

    receiver.wait_for(1).await;
    let database = deployment.database().await;
    let row = eventually(
        Duration::from_secs(10),
        "the callback to be dead",
        || async {
            let row = database
                .query_one("SELECT status, attempts, last_error FROM callbacks", &[])
                .await
                .unwrap();
            (row.get::<_, &str>(0) != "pending").then_some(row)
        },
    )
    .await;
    assert_eq!(row.get::<_, &str>(0), "dead");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row.get::<_, &str>(2).contains("410"));
    let callback = callback_of(&deployment, &task_id).await;
    assert_eq!(callback["status"], "dead", "{callback}");
    assert_eq!(callback["attempts"], 1);
    assert_eq!(callback["last_status_code"], 410);
    assert!(
        callback["last_error"].as_str().unwrap().contains("410"),
        "{callback}"
    );
    assert_eq!(callback["delivered_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "no retry after 410");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callback_redirects_are_not_followed() {
    let deployment = Deployment::start(Options {
        callback_max_attempts: 1,
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([StatusCode::FOUND]).await;
    one_file_task(&deployment, &receiver, &source).await;

    receiver.wait_for(1).await;
    let database = deployment.database().await;
    let row = eventually(
        Duration::from_secs(10),
        "the callback to be dead",
        || async {
            let row = database
                .query_one("SELECT status, last_status_code FROM callbacks", &[])
                .await
                .unwrap();
            (row.get::<_, &str>(0) != "pending").then_some(row)
        },
    )
    .await;
    assert_eq!(row.get::<_, &str>(0), "dead");
    assert_eq!(row.get::<_, Option<i32>>(1), Some(302));
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_callback_job_sends_once() {
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start_slow([], Duration::from_millis(1500)).await;
    one_file_task(&deployment, &receiver, &source).await;

    // While the first POST is in flight, a copy of its job arrives, as
    // after a relay crash between the broker's confirm and its commit.
    let database = deployment.database().await;
    let callback_id: uuid::Uuid =
        eventually(Duration::from_secs(10), "the callback row", || async {
            let row = database
                .query_opt(
                    "SELECT id FROM callbacks WHERE lease_until IS NOT NULL",
                    &[],
                )
                .await
                .unwrap()?;
            Some(row.get(0))
        })
        .await;
    let job = attache_domain::JobMessage::Callback(attache_domain::CallbackJob {
        callback_id: callback_id.into(),
        attempt: 0,
    });
    database
        .execute(
            "INSERT INTO outbox (kind, payload) VALUES ('callback', $1)",
            &[&job.to_json()],
        )
        .await
        .unwrap();

    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "the copy did not POST again");
    let attempts: i64 = database
        .query_one("SELECT count(*) FROM callback_attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipv6_callback_via_ipv4_members_dies() {
    let deployment = Deployment::start(Options {
        egress_members: vec!["local:127.0.0.41".parse().unwrap()],
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([]).await;
    let callback_url = receiver.url().replace("127.0.0.1", "[::ffff:127.0.0.1]");
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": callback_url, "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    let (status, attempts, last_error) = deployment.settled_callback().await;
    assert_eq!(status, "dead", "{last_error}");
    assert_eq!(attempts, 1, "no retry: {last_error}");
    assert!(
        last_error.contains("every egress member connects over IPv4"),
        "{last_error}"
    );
    assert!(
        last_error.contains("write the address as 127.0.0.1"),
        "{last_error}"
    );
    assert!(receiver.received().is_empty());
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callback_retry_is_logged_at_warn() {
    let capturing = crate::support::logs::install();
    assert!(
        capturing,
        "unset RUST_LOG: this test searches captured logs"
    );
    let deployment = Deployment::start(Options::default()).await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([StatusCode::INTERNAL_SERVER_ERROR]).await;
    one_file_task(&deployment, &receiver, &source).await;
    receiver.wait_for(2).await;

    let database = deployment.database().await;
    let callback_id: uuid::Uuid = database
        .query_one("SELECT id FROM callbacks", &[])
        .await
        .unwrap()
        .get(0);
    let callback_id = callback_id.to_string();
    let logs = crate::support::logs::captured();
    let attempts: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(&callback_id) && line.contains("callback attempt finished"))
        .collect();
    let retry = attempts
        .iter()
        .find(|line| line.contains("outcome=\"retry\""))
        .unwrap_or_else(|| panic!("no retry logged for {callback_id}: {attempts:?}"));
    assert!(retry.contains(" WARN "), "{retry}");
    assert!(retry.contains("HTTP 500"), "the error is logged: {retry}");
    deployment.stop().await;
}
