//! The Google Cloud side of the Cloud Storage tests: gcp-storage-emulator
//! on loopback, a mock of the IAM Credentials API, and a loopback front
//! that decides access to the emulator's buckets.
//!
//! gcp-storage-emulator accepts any bearer token, or none, so on its own it
//! could not show which identity read an object. `StorageFront` checks
//! each request's token against the buckets its principal may read, as
//! Cloud Storage's IAM would, and forwards allowed requests unchanged.
//! Google publishes no emulator for IAM Credentials, so `MockIam` mints
//! tokens itself, only for the (caller token, service account) pairs it was
//! given, and registers each token's service account for the front.
//! Both record the peer address of every request, so a test can check that
//! every request left through an egress pool member.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::forward::{Upstream, serve_with_peers};

/// Maximum generateAccessToken body size that `MockIam` reads.
const MAX_IAM_BODY: usize = 64 * 1024;
/// The scope Attaché must request.
const READ_ONLY_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";

/// gcp-storage-emulator on a loopback port, in memory. Dropping it kills
/// the server.
pub struct Emulator {
    pub endpoint: String,
    client: reqwest::Client,
    child: Child,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // SIGKILL to the emulator's own pid; it starts no child processes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Starts the emulator from `.venv` (or `ATTACHE_TEST_PYTHON`) on a
    /// free loopback port, trying new ports if another process takes one.
    pub async fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var("ATTACHE_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run scripts/python-env.sh to install gcp-storage-emulator",
            python.display()
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("building a reqwest client succeeds");
        let mut failures = Vec::new();
        for _ in 0..3 {
            match spawn_emulator(&python, &client).await {
                Ok((child, endpoint)) => {
                    return Self {
                        endpoint,
                        client,
                        child,
                    };
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "gcp-storage-emulator failed to start three times:\n{}",
            failures.join("\n")
        );
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) {
        let response = self
            .client
            .post(format!("{}/storage/v1/b", self.endpoint))
            .json(&json!({"name": bucket}))
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            response.status().is_success(),
            "creating bucket {bucket} failed: {}",
            response.status()
        );
    }

    /// Uploads `body` as `object` in `bucket`, bypassing the front.
    pub async fn upload(&self, bucket: &str, object: &str, body: Vec<u8>) {
        let mut url = url::Url::parse(&format!("{}/upload/storage/v1/b/{bucket}/o", self.endpoint))
            .expect("a valid URL");
        url.query_pairs_mut()
            .append_pair("uploadType", "media")
            .append_pair("name", object);
        let response = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            response.status().is_success(),
            "uploading {object:?} to {bucket} failed: {}",
            response.status()
        );
    }
}

/// Starts `python -m gcp_storage_emulator start` on a free loopback port
/// and waits up to 30 s for its health check. On failure, returns the
/// reason and the emulator's output.
async fn spawn_emulator(
    python: &Path,
    client: &reqwest::Client,
) -> Result<(Child, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback port succeeds")
        .port();
    let mut log = tempfile::tempfile().expect("creating a temporary file succeeds");
    let mut child = Command::new(python)
        .args(["-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--in-memory"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating a file handle succeeds"))
        .stderr(log.try_clone().expect("duplicating a file handle succeeds"))
        .spawn()
        .map_err(|error| {
            format!(
                "{} -m gcp_storage_emulator failed to run: {error}",
                python.display()
            )
        })?;
    let endpoint = format!("http://127.0.0.1:{port}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let failure = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break format!("the emulator on port {port} exited with {status}");
        }
        let probe = client.get(format!("{endpoint}/")).send().await;
        if probe.is_ok_and(|response| response.status().is_success()) {
            return Ok((child, endpoint));
        }
        if tokio::time::Instant::now() >= deadline {
            break format!("the emulator on port {port} did not respond within 30 s");
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

/// The service account of each token and the buckets each may read, shared by the
/// mock IAM (which adds tokens) and the storage front (which checks them).
#[derive(Default)]
pub struct Grants {
    /// Bearer token to the service account it belongs to.
    tokens: Mutex<HashMap<String, String>>,
    /// Service account to the buckets it may read.
    readers: Mutex<HashMap<String, HashSet<String>>>,
    /// (caller's service account, target service account) pairs that
    /// generateAccessToken allows.
    token_creators: Mutex<HashSet<(String, String)>>,
}

impl Grants {
    /// Registers `token` as a token of `service_account`.
    pub fn add_token(&self, token: &str, service_account: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert(token.to_owned(), service_account.to_owned());
    }

    /// Lets `service_account` read `bucket` (Storage Object Viewer).
    pub fn allow_read(&self, service_account: &str, bucket: &str) {
        self.readers
            .lock()
            .unwrap()
            .entry(service_account.to_owned())
            .or_default()
            .insert(bucket.to_owned());
    }

    /// Lets `caller` mint tokens for `target` (Service Account Token
    /// Creator).
    pub fn allow_impersonation(&self, caller: &str, target: &str) {
        self.token_creators
            .lock()
            .unwrap()
            .insert((caller.to_owned(), target.to_owned()));
    }

    /// Takes back what `allow_impersonation` granted.
    pub fn revoke_impersonation(&self, caller: &str, target: &str) {
        self.token_creators
            .lock()
            .unwrap()
            .remove(&(caller.to_owned(), target.to_owned()));
    }

    fn principal(&self, authorization: Option<&str>) -> Option<String> {
        let token = authorization?.strip_prefix("Bearer ")?;
        self.tokens.lock().unwrap().get(token).cloned()
    }

    fn may_read(&self, principal: &str, bucket: &str) -> bool {
        self.readers
            .lock()
            .unwrap()
            .get(principal)
            .is_some_and(|buckets| buckets.contains(bucket))
    }

    fn may_impersonate(&self, caller: &str, target: &str) -> bool {
        self.token_creators
            .lock()
            .unwrap()
            .contains(&(caller.to_owned(), target.to_owned()))
    }
}

/// One generateAccessToken request received by `MockIam`.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub service_account: String,
    pub body: Value,
    pub peer: IpAddr,
}

/// A mock of IAM Credentials `generateAccessToken` on loopback.
pub struct MockIam {
    addr: SocketAddr,
    shared: Arc<IamShared>,
}

struct IamShared {
    grants: Arc<Grants>,
    requests: Mutex<Vec<TokenRequest>>,
    issued: AtomicUsize,
    /// Time each response takes, so concurrent callers overlap.
    delay: Duration,
}

impl MockIam {
    pub async fn start(grants: Arc<Grants>) -> Self {
        let shared = Arc::new(IamShared {
            grants,
            requests: Mutex::default(),
            issued: AtomicUsize::new(0),
            delay: Duration::from_millis(200),
        });
        let addr = serve_with_peers(
            Router::new()
                .fallback(generate_access_token)
                .with_state(shared.clone()),
        )
        .await;
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns every generateAccessToken request, refused ones included.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn generate_access_token(
    State(shared): State<Arc<IamShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let caller = shared.grants.principal(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok()),
    );
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_IAM_BODY).await else {
        return google_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let Some(service_account) = path
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|rest| rest.strip_suffix(":generateAccessToken"))
        .map(|account| {
            percent_encoding::percent_decode_str(account)
                .decode_utf8_lossy()
                .into_owned()
        })
    else {
        return google_error(StatusCode::NOT_FOUND, &format!("no such method: {path}"));
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(TokenRequest {
        service_account: service_account.clone(),
        body: body.clone(),
        peer: peer.ip(),
    });
    tokio::time::sleep(shared.delay).await;

    let Some(caller) = caller else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials.",
        );
    };
    if !shared.grants.may_impersonate(&caller, &service_account) {
        return google_error(
            StatusCode::FORBIDDEN,
            "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
        );
    }
    let scopes_ok = body["scope"]
        .as_array()
        .is_some_and(|scopes| scopes.iter().any(|scope| scope == READ_ONLY_SCOPE));
    if !scopes_ok || !body["lifetime"].is_string() {
        return google_error(StatusCode::BAD_REQUEST, "scope and lifetime are required");
    }
    let number = shared.issued.fetch_add(1, Ordering::SeqCst);
    let token = format!("impersonated-{number}-{}", uuid::Uuid::new_v4().simple());
    shared.grants.add_token(&token, &service_account);
    let expire_time = chrono::Utc::now() + chrono::Duration::hours(1);
    let answer = json!({"accessToken": token, "expireTime": expire_time.to_rfc3339()});
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// A loopback front of the emulator that returns 401 to unknown tokens and
/// 403 to a principal that may not read the request's bucket, and forwards
/// every other request. It records every request's peer address.
///
/// The emulator sends no `x-goog-hash` on downloads, so the front adds
/// the CRC32C and MD5 that the emulator computed at upload (the object's
/// `crc32c` and `md5Hash` metadata), as Cloud Storage does.
pub struct StorageFront {
    addr: SocketAddr,
    shared: Arc<FrontShared>,
}

struct FrontShared {
    grants: Arc<Grants>,
    upstream: Upstream,
    /// The emulator, for object metadata.
    emulator: String,
    client: reqwest::Client,
    /// Whether to change one byte of the next download's body.
    corrupt_next_get: std::sync::atomic::AtomicBool,
    peers: Mutex<Vec<IpAddr>>,
    reads: Mutex<Vec<(String, String)>>,
}

impl StorageFront {
    pub async fn start(emulator: &Emulator, grants: Arc<Grants>) -> Self {
        let shared = Arc::new(FrontShared {
            grants,
            upstream: Upstream::new(&emulator.endpoint),
            emulator: emulator.endpoint.clone(),
            client: emulator.client.clone(),
            corrupt_next_get: std::sync::atomic::AtomicBool::new(false),
            peers: Mutex::default(),
            reads: Mutex::default(),
        });
        let addr = serve_with_peers(
            Router::new()
                .fallback(front_storage)
                .with_state(shared.clone()),
        )
        .await;
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the last byte of the next download's body, keeping its
    /// headers (and so its checksum), as a corrupted transfer.
    pub fn corrupt_next_get(&self) {
        self.shared.corrupt_next_get.store(true, Ordering::SeqCst);
    }

    /// Returns the peer address of every request received.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.shared.peers.lock().unwrap().clone()
    }

    /// Returns the (principal, bucket) of every request let through.
    pub fn reads(&self) -> Vec<(String, String)> {
        self.shared.reads.lock().unwrap().clone()
    }
}

async fn front_storage(
    State(shared): State<Arc<FrontShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    shared.peers.lock().unwrap().push(peer.ip());
    let bucket = request
        .uri()
        .path()
        .strip_prefix("/storage/v1/b/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let principal = shared.grants.principal(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok()),
    );
    let Some(principal) = principal else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Anonymous caller does not have storage.objects.get access.",
        );
    };
    if !shared.grants.may_read(&principal, &bucket) {
        let message = format!(
            "{principal} does not have storage.objects.get access to the Google Cloud Storage object."
        );
        return google_error(StatusCode::FORBIDDEN, &message);
    }
    shared.reads.lock().unwrap().push((principal, bucket));
    let metadata_url = format!("{}{}", shared.emulator, request.uri().path());
    let response = shared.upstream.forward(request).await;
    if !response.status().is_success() {
        return response;
    }
    let metadata: Value = shared
        .client
        .get(metadata_url)
        .send()
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("object metadata is JSON");
    let hash = format!(
        "crc32c={},md5={}",
        metadata["crc32c"]
            .as_str()
            .expect("the emulator stores a CRC32C"),
        metadata["md5Hash"]
            .as_str()
            .expect("the emulator stores an MD5")
    );
    let (mut parts, body) = response.into_parts();
    parts
        .headers
        .insert("x-goog-hash", hash.parse().expect("a valid header value"));
    if !shared.corrupt_next_get.swap(false, Ordering::SeqCst) {
        return Response::from_parts(parts, body);
    }
    let mut bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= 0xff;
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Builds a Google API error response.
fn google_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message}});
    (status, axum::Json(body)).into_response()
}
