//! The AWS side of the S3 tests: a moto server on loopback, set up by
//! scripts/aws_fixture.py (its docstring gives the fixture's JSON shape),
//! and two loopback proxies in front of it.
//!
//! moto 5.2.5 evaluates a role's trust policy only when the role is in the
//! caller's own account (its IAM access control looks the role up there),
//! so it accepts any External ID, or none, for the fixture's cross-account
//! roles. `StsFront` applies AWS's External ID rule in its place.
//! `RecordingProxy` records the S3 requests that reach moto, because moto
//! ignores headers such as `x-amz-expected-bucket-owner`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::forward::{Upstream, serve};

/// Largest STS request body that `StsFront` reads, far above the size of
/// any AssumeRole form.
const MAX_STS_BODY: usize = 1024 * 1024;

/// A moto server on a loopback port, set up by the fixture script with IAM
/// enforcement on. Dropping it kills the server.
pub struct Moto {
    pub endpoint: String,
    /// The fixture script's JSON output.
    pub fixture: Value,
    child: Child,
}

impl Moto {
    /// Returns the (role ARN, External ID) pairs of the fixture's roles whose
    /// trust policy requires an External ID, for `StsFront::start`.
    pub fn required_external_ids(&self) -> Vec<(String, String)> {
        let customers = self.fixture["customers"].as_object();
        customers
            .into_iter()
            .flat_map(|customers| customers.values())
            .filter(|customer| customer["requires_external_id"] == true)
            .map(|customer| {
                let field = |name: &str| customer[name].as_str().unwrap_or_default().to_owned();
                (field("role_arn"), field("external_id"))
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL to moto's own pid. It runs without its reloader, so it has
        // no child processes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto on a free loopback port and runs scripts/aws_fixture.py
/// against it. Customer A's role requires `external_id_a`. Customer B's
/// role requires none, and B's team is configured with `external_id_b`.
/// `ATTACHE_TEST_PYTHON` overrides the interpreter, `.venv/bin/python`.
pub async fn start_moto(external_id_a: &str, external_id_b: &str) -> Moto {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("ATTACHE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh to install moto",
        python.display()
    );

    // The port is free when bound here but another process may take it
    // before moto binds it, so a server that fails to start gets new ports.
    let mut failures = Vec::new();
    for _ in 0..3 {
        match spawn_moto(&python).await {
            Ok((child, endpoint)) => {
                // From here on a panic drops `moto`, which kills the server.
                let mut moto = Moto {
                    endpoint,
                    fixture: Value::Null,
                    child,
                };
                let mut fixture = Command::new(&python);
                fixture
                    .arg(root.join("scripts/aws_fixture.py"))
                    .args(["--endpoint", &moto.endpoint])
                    .args(["--external-id-a", external_id_a])
                    .args(["--external-id-b", external_id_b]);
                moto.fixture = run_fixture(fixture).await;
                return moto;
            }
            Err(failure) => failures.push(failure),
        }
    }
    panic!("moto failed to start three times:\n{}", failures.join("\n"));
}

/// Starts `python -m moto.server` on a free loopback port and waits up to
/// 30 s for it to respond. On failure, returns the reason and moto's output.
async fn spawn_moto(python: &Path) -> Result<(Child, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback port succeeds")
        .port();
    let mut log = tempfile::tempfile().expect("creating a temporary file succeeds");
    let mut child = Command::new(python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // MOTO_ACCOUNT_ID would override the fixture's x-moto-account-id
        // header, and INITIAL_NO_AUTH_ACTION_COUNT would enforce IAM early.
        .env_remove("MOTO_ACCOUNT_ID")
        .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating a file handle succeeds"))
        .stderr(log.try_clone().expect("duplicating a file handle succeeds"))
        .spawn()
        .map_err(|error| format!("{} -m moto.server failed to run: {error}", python.display()))?;
    let endpoint = format!("http://127.0.0.1:{port}");

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("building a reqwest client succeeds");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let failure = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break format!("moto on port {port} exited with {status}");
        }
        let probe = client.get(format!("{endpoint}/moto-api/")).send().await;
        if probe.is_ok_and(|response| response.status().is_success()) {
            return Ok((child, endpoint));
        }
        if tokio::time::Instant::now() >= deadline {
            break format!("moto on port {port} did not respond within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let _ = child.kill();
    let _ = child.wait();
    let mut output = String::new();
    let _ = log.seek(SeekFrom::Start(0));
    let _ = log.read_to_string(&mut output);
    Err(format!("{failure}; its output:\n{output}"))
}

async fn run_fixture(mut command: Command) -> Value {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the fixture script's thread does not panic")
        .expect("the fixture script starts");
    assert!(
        output.status.success(),
        "scripts/aws_fixture.py failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the fixture script prints one JSON object")
}

/// A loopback proxy in front of moto's STS. It rejects an AssumeRole for a
/// listed role with 403 and AWS's error XML when the form's `ExternalId` is
/// missing or differs from the listed one. It forwards every other request
/// to moto unchanged, including an AssumeRole sent as a GET query string.
pub struct StsFront {
    addr: SocketAddr,
    shared: Arc<StsShared>,
}

struct StsShared {
    upstream: Upstream,
    /// Role ARN to the External ID its trust policy requires.
    required: HashMap<String, String>,
    assume_role_calls: AtomicUsize,
}

impl StsFront {
    /// Starts a front that requires, for each (role ARN, External ID) pair
    /// in `required`, that External ID in AssumeRole requests for the role.
    pub async fn start(
        upstream: &str,
        required: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let shared = Arc::new(StsShared {
            upstream: Upstream::new(upstream),
            required: required.into_iter().collect(),
            assume_role_calls: AtomicUsize::new(0),
        });
        let addr = serve(Router::new().fallback(front_sts).with_state(shared.clone())).await;
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the number of AssumeRole requests received, rejected ones included.
    pub fn assume_role_calls(&self) -> usize {
        self.shared.assume_role_calls.load(Ordering::SeqCst)
    }
}

async fn front_sts(State(shared): State<Arc<StsShared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_STS_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "STS request body over 1 MiB").into_response();
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("Action").map(String::as_str) == Some("AssumeRole") {
        shared.assume_role_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(role_arn) = form.get("RoleArn")
            && let Some(required) = shared.required.get(role_arn)
            && form.get("ExternalId") != Some(required)
        {
            return assume_role_denied(role_arn);
        }
    }
    let request = Request::from_parts(parts, Body::from(body));
    shared.upstream.forward(request).await
}

/// Builds the 403 that AWS STS returns when a trust policy rejects the caller.
fn assume_role_denied(role_arn: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <Error><Type>Sender</Type><Code>AccessDenied</Code>\
         <Message>User is not authorized to perform: sts:AssumeRole on resource: {role_arn}</Message>\
         </Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    );
    let headers = [
        (header::CONTENT_TYPE, "text/xml".to_owned()),
        (HeaderName::from_static("x-amzn-requestid"), request_id),
    ];
    (StatusCode::FORBIDDEN, headers, body).into_response()
}

/// One request that reached a `RecordingProxy`.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    /// The path as received, still percent-encoded.
    pub path: String,
    pub headers: HeaderMap,
}

/// A loopback proxy in front of moto's S3 that records every request and
/// forwards it unchanged.
pub struct RecordingProxy {
    addr: SocketAddr,
    shared: Arc<RecordingShared>,
}

struct RecordingShared {
    upstream: Upstream,
    requests: Mutex<Vec<RecordedRequest>>,
    /// A region to name in a redirect sent in response to the next GET.
    redirect_next_get: Mutex<Option<String>>,
    /// Whether to change one byte of the next GET's response body.
    corrupt_next_get: std::sync::atomic::AtomicBool,
    /// Whether to reject the next GET as S3 rejects expired credentials.
    expire_next_get: std::sync::atomic::AtomicBool,
}

impl RecordingProxy {
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(RecordingShared {
            upstream: Upstream::new(upstream),
            requests: Mutex::default(),
            redirect_next_get: Mutex::default(),
            corrupt_next_get: std::sync::atomic::AtomicBool::new(false),
            expire_next_get: std::sync::atomic::AtomicBool::new(false),
        });
        let addr = serve(Router::new().fallback(record).with_state(shared.clone())).await;
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Responds to the next GET, instead of forwarding it, as S3 responds to
    /// a request sent to the wrong region: 301 naming `region`.
    pub fn redirect_next_get(&self, region: &str) {
        *self.shared.redirect_next_get.lock().unwrap() = Some(region.to_owned());
    }

    /// Rejects the next GET with 400 ExpiredToken, as S3 rejects a request
    /// signed with temporary credentials that have expired.
    pub fn expire_next_get(&self) {
        self.shared.expire_next_get.store(true, Ordering::SeqCst);
    }

    /// Changes the last byte of the next GET's response body, keeping its
    /// headers (and so the checksum S3 sent), as a corrupted transfer.
    pub fn corrupt_next_get(&self) {
        self.shared.corrupt_next_get.store(true, Ordering::SeqCst);
    }

    /// Returns every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn record(State(shared): State<Arc<RecordingShared>>, request: Request) -> Response {
    shared.requests.lock().unwrap().push(RecordedRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        headers: request.headers().clone(),
    });
    if request.method() == Method::GET
        && let Some(region) = shared.redirect_next_get.lock().unwrap().take()
    {
        let body = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<Error><Code>PermanentRedirect</Code>",
            "<Message>The bucket must be addressed in its own region.</Message></Error>"
        );
        return (
            StatusCode::MOVED_PERMANENTLY,
            [
                ("x-amz-bucket-region", region),
                ("content-type", "application/xml".to_owned()),
            ],
            body,
        )
            .into_response();
    }
    if request.method() == Method::GET && shared.expire_next_get.swap(false, Ordering::SeqCst) {
        let body = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<Error><Code>ExpiredToken</Code>",
            "<Message>The provided token has expired.</Message></Error>"
        );
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/xml")],
            body,
        )
            .into_response();
    }
    let corrupt =
        request.method() == Method::GET && shared.corrupt_next_get.swap(false, Ordering::SeqCst);
    let response = shared.upstream.forward(request).await;
    if !corrupt {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    Response::from_parts(parts, Body::from(bytes))
}
