//! The Azure side of the Blob Storage tests: Azurite on loopback, a mock
//! token endpoint of the Microsoft identity platform, and a loopback front
//! that decides which tenant's token may read which container.
//!
//! Azurite checks a bearer token only over https with `--oauth basic`, and
//! then checks its issuer, audience and times but not its signature, nor
//! which principal may read which container. So Azurite runs over http,
//! where it serves anonymous reads of public containers as Blob Storage
//! does. `BlobFront` plays Azure RBAC in front of it. The front accepts
//! only tokens that `MockTokens` issued and lets a tenant read only the
//! containers granted to it. It forwards an allowed request with a
//! read-only container SAS in place of the token, and a request without a
//! token unchanged, so Azurite decides whether the container is public. `MockTokens` issues
//! tokens only for tenants that consented, because no emulator of the
//! identity platform exists. Both record the peer address of every
//! request, so a test can check that every request left through an egress
//! pool member.

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

/// Azurite's development account, the only account it serves by default.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Our application's client ID and secret in the tests.
pub const CLIENT_ID: &str = "00000000-0000-0000-0000-00000000a77a";
pub const CLIENT_SECRET: &str = "test-client-secret";
/// The scope Attaché must request.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Maximum token request body that `MockTokens` reads.
const MAX_TOKEN_BODY: usize = 16 * 1024;

/// Azurite's blob service on a loopback port, storing into a temporary
/// directory. Dropping it kills the server.
pub struct Azurite {
    /// The account's base URL, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    child: Child,
    _location: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // SIGKILL to Azurite's own pid, a node process that starts no
        // child processes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A container to create, with its blobs.
pub struct ContainerSpec<'a> {
    pub name: &'a str,
    pub public: bool,
    pub blobs: Vec<(&'a str, Vec<u8>)>,
}

impl Azurite {
    /// Starts Azurite from `.tools/azurite` (see scripts/install-azurite.sh)
    /// on a free loopback port, trying new ports if another process takes
    /// one.
    pub async fn start() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary = root.join(".tools/azurite/node_modules/.bin/azurite-blob");
        assert!(
            binary.exists(),
            "{} is missing: run scripts/install-azurite.sh",
            binary.display()
        );
        let mut failures = Vec::new();
        for _ in 0..3 {
            match spawn_azurite(&binary).await {
                Ok(azurite) => return azurite,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("Azurite did not start: {}", failures.join("; "));
    }

    /// Creates `containers` with scripts/azurite_fixture.py and returns a
    /// read-only SAS query per container.
    pub async fn create(&self, containers: &[ContainerSpec<'_>]) -> HashMap<String, String> {
        use base64::Engine;

        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = std::env::var("ATTACHE_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run scripts/python-env.sh to install azure-storage-blob",
            python.display()
        );
        let spec = json!({"containers": containers.iter().map(|container| json!({
            "name": container.name,
            "public": container.public,
            "blobs": container.blobs.iter().map(|(name, body)| json!({
                "name": name,
                "base64": base64::engine::general_purpose::STANDARD.encode(body),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()});
        let endpoint = self.endpoint.clone();
        let script = root.join("scripts/azurite_fixture.py");
        let output = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(&python)
                .arg(script)
                .args(["--endpoint", &endpoint])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the fixture script starts");
            let mut stdin = child.stdin.take().expect("stdin is piped");
            std::io::Write::write_all(&mut stdin, spec.to_string().as_bytes())
                .expect("writing the fixture spec succeeds");
            drop(stdin);
            child.wait_with_output().expect("the fixture script runs")
        })
        .await
        .expect("the fixture task finishes");
        assert!(
            output.status.success(),
            "scripts/azurite_fixture.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: Value =
            serde_json::from_slice(&output.stdout).expect("the fixture prints JSON");
        result["sas"]
            .as_object()
            .expect("the fixture prints a sas object")
            .iter()
            .map(|(name, sas)| (name.clone(), sas.as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}

async fn spawn_azurite(binary: &Path) -> Result<Azurite, String> {
    let port = free_port();
    let location = tempfile::tempdir().expect("a temporary directory");
    let mut log = tempfile::tempfile().expect("creating a temporary file succeeds");
    let mut child = Command::new(binary)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--loose", "--skipApiVersionCheck", "--disableTelemetry"])
        .arg("--location")
        .arg(location.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating a file handle succeeds"))
        .stderr(log.try_clone().expect("duplicating a file handle succeeds"))
        .spawn()
        .map_err(|error| format!("{} failed to run: {error}", binary.display()))?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let failure = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break format!("Azurite on port {port} exited with {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(Azurite {
                endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
                child,
                _location: location,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            break format!("Azurite on port {port} did not listen within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let _ = child.kill();
    let _ = child.wait();
    let mut output = String::new();
    let _ = log.seek(SeekFrom::Start(0));
    let _ = log.read_to_string(&mut output);
    Err(format!("{failure}: {output}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback port succeeds")
        .port()
}

/// Which tenants consented, which tokens were issued to which tenant, and
/// which containers each tenant may read.
#[derive(Default)]
pub struct Directory {
    consented: Mutex<HashSet<String>>,
    tokens: Mutex<HashMap<String, String>>,
    readers: Mutex<HashSet<(String, String)>>,
}

impl Directory {
    /// Records that `tenant` granted our application admin consent.
    pub fn consent(&self, tenant: &str) {
        self.consented.lock().unwrap().insert(tenant.to_owned());
    }

    /// Records that `tenant` deleted our application, so it refuses tokens.
    pub fn revoke(&self, tenant: &str) {
        self.consented.lock().unwrap().remove(tenant);
    }

    /// Assigns our application Storage Blob Data Reader in `tenant` on
    /// `container`.
    pub fn allow_read(&self, tenant: &str, container: &str) {
        self.readers
            .lock()
            .unwrap()
            .insert((tenant.to_owned(), container.to_owned()));
    }

    fn tenant_of(&self, token: &str) -> Option<String> {
        self.tokens.lock().unwrap().get(token).cloned()
    }
}

/// One request received by `MockTokens`.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub peer: IpAddr,
    pub tenant: String,
}

struct TokenShared {
    directory: Arc<Directory>,
    issued: AtomicUsize,
    requests: Mutex<Vec<TokenRequest>>,
}

/// The client-credentials token endpoint of the Microsoft identity
/// platform: `POST /{tenant}/oauth2/v2.0/token`.
pub struct MockTokens {
    addr: SocketAddr,
    shared: Arc<TokenShared>,
}

impl MockTokens {
    pub async fn start(directory: Arc<Directory>) -> Self {
        let shared = Arc::new(TokenShared {
            directory,
            issued: AtomicUsize::new(0),
            requests: Mutex::default(),
        });
        let addr = serve_with_peers(
            Router::new()
                .route(
                    "/{tenant}/oauth2/v2.0/token",
                    axum::routing::post(issue_token),
                )
                .with_state(shared.clone()),
        )
        .await;
        Self { addr, shared }
    }

    /// The authority URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns every token request received.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn issue_token(
    State(shared): State<Arc<TokenShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    request: Request,
) -> Response {
    shared.requests.lock().unwrap().push(TokenRequest {
        peer: peer.ip(),
        tenant: tenant.clone(),
    });
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_TOKEN_BODY).await else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        );
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != super::azure::CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if field("grant_type") != "client_credentials" || field("scope") != STORAGE_SCOPE {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "expected grant_type=client_credentials and the storage scope",
        );
    }
    if !shared.directory.consented.lock().unwrap().contains(&tenant) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
        );
    }
    let serial = shared.issued.fetch_add(1, Ordering::SeqCst);
    let token = format!("token-{tenant}-{serial}");
    shared
        .directory
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), tenant);
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}))
        .into_response()
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, axum::Json(body)).into_response()
}

/// One blob request received by `BlobFront`.
#[derive(Clone, Debug)]
pub struct BlobRequest {
    pub peer: IpAddr,
    /// The tenant whose token the request carried; `None` when anonymous.
    pub tenant: Option<String>,
    pub container: String,
}

struct FrontShared {
    directory: Arc<Directory>,
    upstream: Upstream,
    sas: HashMap<String, String>,
    requests: Mutex<Vec<BlobRequest>>,
}

/// A loopback front of Azurite that applies Azure RBAC to bearer tokens;
/// see the module documentation.
pub struct BlobFront {
    addr: SocketAddr,
    shared: Arc<FrontShared>,
}

impl BlobFront {
    /// `sas` contains a read-only SAS query per container, from
    /// [`Azurite::create`].
    pub async fn start(
        azurite: &Azurite,
        directory: Arc<Directory>,
        sas: HashMap<String, String>,
    ) -> Self {
        let origin = azurite
            .endpoint
            .strip_suffix(&format!("/{ACCOUNT}"))
            .expect("the endpoint ends with the account");
        let shared = Arc::new(FrontShared {
            directory,
            upstream: Upstream::new(origin),
            sas,
            requests: Mutex::default(),
        });
        let addr = serve_with_peers(
            Router::new()
                .fallback(front_blob)
                .with_state(shared.clone()),
        )
        .await;
        Self { addr, shared }
    }

    /// The endpoint template to configure.
    pub fn template(&self) -> String {
        format!("http://{}/{{account}}", self.addr)
    }

    /// Returns every blob request received.
    pub fn requests(&self) -> Vec<BlobRequest> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn front_blob(
    State(shared): State<Arc<FrontShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let container = path.split('/').nth(2).unwrap_or_default().to_owned();
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.strip_prefix("Bearer ").unwrap_or(value).to_owned());
    let tenant = bearer
        .as_deref()
        .and_then(|token| shared.directory.tenant_of(token));
    shared.requests.lock().unwrap().push(BlobRequest {
        peer: peer.ip(),
        tenant: tenant.clone(),
        container: container.clone(),
    });

    match (bearer, tenant) {
        (None, _) => shared.upstream.forward(request).await,
        (Some(_), None) => storage_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationInfo",
            "Server failed to authenticate the request. The token was not issued.",
        ),
        (Some(_), Some(tenant)) => {
            let allowed = shared
                .directory
                .readers
                .lock()
                .unwrap()
                .contains(&(tenant, container.clone()));
            let Some(sas) = shared.sas.get(&container).filter(|_| allowed) else {
                return storage_error(
                    StatusCode::FORBIDDEN,
                    "AuthorizationPermissionMismatch",
                    "This request is not authorized to perform this operation using this permission.",
                );
            };
            request.headers_mut().remove(header::AUTHORIZATION);
            *request.uri_mut() = format!("{path}?{sas}")
                .parse()
                .expect("a path with a SAS query is a valid URI");
            shared.upstream.forward(request).await
        }
    }
}

/// Builds a Blob Storage error response.
fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        "x-ms-error-code",
        code.parse().expect("an error code is a valid header value"),
    );
    response
}
