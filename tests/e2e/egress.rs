//! The egress pool and destination guard in the whole pipeline.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;

use crate::support::{Deployment, Options, Receiver, Source, SourceFile, eventually};

const MEMBER_IPS: [&str; 5] = [
    "127.0.0.11",
    "127.0.0.12",
    "127.0.0.13",
    "127.0.0.14",
    "127.0.0.15",
];

/// Ranges that let every literal past the API, so the workers' own guard
/// is what denies it.
fn allow_everything() -> Vec<ipnet::IpNet> {
    vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
}

/// A callback endpoint that records each request's source address.
struct PeerRecorder {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl PeerRecorder {
    async fn start() -> Self {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/hooks", post(record_peer))
            .with_state(peers.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        Self { addr, peers }
    }

    fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

async fn record_peer(
    State(peers): State<Arc<Mutex<Vec<IpAddr>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> StatusCode {
    peers.lock().unwrap().push(peer.ip());
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_leave_from_pool_members() {
    let deployment = Deployment::start(Options {
        egress_members: MEMBER_IPS
            .iter()
            .map(|ip| format!("local:{ip}").parse().unwrap())
            .collect(),
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = PeerRecorder::start().await;
    for _ in 0..20 {
        let (status, _) = deployment
            .submit(
                &json!({
                    "callback_url": format!("http://{}/hooks", receiver.addr),
                    "attachments": [{"uri": source.url("a.txt")}],
                }),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    }

    let peers = eventually(Duration::from_secs(30), "20 callbacks", || async {
        let peers = receiver.peers();
        (peers.len() >= 20).then_some(peers)
    })
    .await;
    let members: HashSet<IpAddr> = MEMBER_IPS.iter().map(|ip| ip.parse().unwrap()).collect();
    assert!(peers.iter().all(|peer| members.contains(peer)), "{peers:?}");
    let used: HashSet<&IpAddr> = peers.iter().collect();
    assert_eq!(used.len(), 5, "every member carried callbacks: {peers:?}");

    let database = deployment.database().await;
    let names: HashSet<String> = MEMBER_IPS.iter().map(|ip| format!("local:{ip}")).collect();
    for table in ["attachments", "callbacks"] {
        let recorded = eventually(
            Duration::from_secs(10),
            "every row's egress member",
            || async {
                let rows = database
                    .query(&format!("SELECT egress_member FROM {table}"), &[])
                    .await
                    .unwrap();
                let members: Vec<Option<String>> = rows.iter().map(|row| row.get(0)).collect();
                members.iter().all(Option::is_some).then_some(members)
            },
        )
        .await;
        assert_eq!(recorded.len(), 20, "{table}");
        for member in recorded.into_iter().flatten() {
            assert!(names.contains(&member), "{table}: {member}");
        }
    }
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_attachment_destinations_fail_finally() {
    let deployment = Deployment::start(Options {
        producer_allow_cidrs: allow_everything(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start([]).await;
    let (status, _) = deployment
        .submit(
            &json!({
                "callback_url": receiver.url(),
                "attachments": [
                    {"uri": "http://10.0.0.1/report.pdf"},
                    {"uri": "http://169.254.169.254/latest/meta-data/"},
                    {"uri": "http://[::ffff:192.168.1.1]/a"},
                ],
            }),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["data"]["status"], "failed");
    let expected = [
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("[::ffff:c0a8:101]", "private"),
    ];
    for (attachment, (host, class)) in payload["data"]["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected)
    {
        assert_eq!(
            attachment["error_code"], "destination_forbidden",
            "{attachment}"
        );
        let message = attachment["error_message"].as_str().unwrap();
        assert!(message.contains(host), "{message}");
        assert!(message.contains(class), "{message}");
    }
    let attempts: Vec<i32> = deployment
        .database()
        .await
        .query("SELECT attempts FROM attachments", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(attempts, [1, 1, 1], "a denied destination is not retried");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_callback_destination_is_dead() {
    let deployment = Deployment::start(Options {
        producer_allow_cidrs: allow_everything(),
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let (status, accepted) = deployment
        .submit(
            &json!({"callback_url": "http://[fd00::1]/hooks", "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{accepted}");

    let (status, attempts, error) = deployment.settled_callback().await;
    assert_eq!(status, "dead");
    assert_eq!(attempts, 1);
    assert!(
        error.contains("destination_forbidden") && error.contains("unique local"),
        "{error}"
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unusable_pool_retries_and_sends_nothing() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let member = format!("proxy:http://{}", closed.local_addr().unwrap());
    drop(closed);
    let deployment = Deployment::start(Options {
        egress_members: vec![member.parse().unwrap()],
        ..Options::default()
    })
    .await;
    let source = Source::start([("a.txt", SourceFile::new("a", "text/plain"))]).await;
    let receiver = Receiver::start([]).await;
    deployment
        .submit(
            &json!({"callback_url": receiver.url(), "attachments": [{"uri": source.url("a.txt")}]}),
            None,
        )
        .await;

    let database = deployment.database().await;
    let row = eventually(
        Duration::from_secs(20),
        "the attachment to fail",
        || async {
            let row = database
                .query_one("SELECT status, attempts, error_code FROM attachments", &[])
                .await
                .unwrap();
            (row.get::<_, &str>(0) == "failed").then_some(row)
        },
    )
    .await;
    assert_eq!(
        row.get::<_, i32>(1),
        Options::default().fetch_max_attempts as i32,
        "retried"
    );
    assert_eq!(row.get::<_, &str>(2), "egress_unavailable");
    assert_eq!(source.hits("a.txt"), 0, "nothing went out directly");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.received().is_empty());
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_rejects_denied_literals() {
    let deployment = Deployment::start(Options::default()).await;
    let cases = [
        (
            json!({"callback_url": "http://169.254.169.254/hook", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}),
            "callback_url",
        ),
        (
            json!({"callback_url": "http://127.0.0.1:9/hook", "attachments": [{"uri": "http://10.0.0.1/a"}]}),
            "attachments[0].uri",
        ),
        (
            json!({"callback_url": "http://127.0.0.1:9/hook", "attachments": [{"uri": "http://127.0.0.1:9/a"}, {"uri": "http://[::ffff:192.168.0.1]/b"}]}),
            "attachments[1].uri",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = deployment.submit(&body, None).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["code"], "destination_forbidden", "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    deployment.stop().await;
}
