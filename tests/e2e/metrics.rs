//! The metrics the deployment's dashboard and alerts query exist in the
//! binaries' `/metrics` output, which passes `promtool check metrics`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Deployment, Options, Receiver, Source, SourceFile};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Collects every `attache_` metric name that a deploy file mentions.
fn referenced_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in [
        "deploy/grafana/attache-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(repository().join(file)).unwrap();
        for (start, _) in text.match_indices("attache_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Finds the promtool that deploy/check.sh installs, or one on PATH.
fn promtool() -> PathBuf {
    if let Ok(path) = std::env::var("ATTACHE_TEST_PROMTOOL") {
        return PathBuf::from(path);
    }
    let installed = repository().join(".venv-deploy/bin/promtool");
    if installed.exists() {
        return installed;
    }
    let on_path = Command::new("promtool").arg("--version").output();
    assert!(
        on_path.is_ok_and(|output| output.status.success()),
        "promtool is missing: run deploy/check.sh (make test does) to install it"
    );
    PathBuf::from("promtool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_and_alert_metrics_exist() {
    let deployment = Deployment::start(Options {
        egress_members: vec!["local:127.0.0.11".parse().unwrap()],
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([]).await;
    let (status, _) = deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("a.txt")}, {"uri": source.url("gone.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = deployment.submit(&json!({"attachments": []}), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    receiver.wait_for(1).await;

    // All three binaries run in this process and share one registry, so
    // any admin server shows every metric; each must respond all the same.
    let mut scrape = String::new();
    for admin in deployment.admin {
        let response = deployment
            .http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        scrape = response.text().await.unwrap();
    }
    let exposed: BTreeSet<&str> = scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap())
        .collect();
    for name in referenced_metrics() {
        assert!(
            exposed.contains(name.as_str()),
            "{name} is queried by deploy/ but not exposed; exposed: {exposed:?}"
        );
    }

    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_carry_no_secrets() {
    let capturing = crate::support::logs::install();
    assert!(
        capturing,
        "unset RUST_LOG: this test searches captured logs"
    );
    let deployment = Deployment::start(Options::default()).await;
    let signature = format!("sig{}", uuid::Uuid::new_v4().simple());
    let hook_token = format!("hook{}", uuid::Uuid::new_v4().simple());
    let guessed_key = format!("att_guess{}", uuid::Uuid::new_v4().simple());
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([StatusCode::SERVICE_UNAVAILABLE]).await;
    let signed = |name: &str| format!("{}?X-Amz-Signature={signature}", source.url(name));
    let callback_url = format!("{}?token={hook_token}", receiver.url());
    let (status, _) = deployment
        .submit(
            &json!({"callback_url": callback_url, "attachments": [{"uri": signed("a.txt")}, {"uri": signed("gone.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // A wrong key sent to the API is not logged either.
    let (status, _) = deployment
        .submit_raw(Some(&guessed_key), "{}".to_owned(), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    receiver.wait_for(2).await;
    let api_key = deployment.team.api_key.clone();
    let signing_secret = deployment.team.signing_secret.clone();
    deployment.stop().await;

    let logs = crate::support::logs::captured();
    assert!(
        logs.contains("task accepted"),
        "the run's logs were captured"
    );
    assert!(
        logs.contains("callback attempt finished"),
        "the run's logs were captured"
    );
    let secret_part = signing_secret.trim_start_matches("whsec_");
    for (name, secret) in [
        ("API key", api_key.as_str()),
        ("wrong API key", guessed_key.as_str()),
        ("signing secret", secret_part),
        ("signed URL query", signature.as_str()),
        ("callback URL token", hook_token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {name} appears in the logs");
    }
}
