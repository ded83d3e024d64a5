//! Loopback servers and a scripted resolver for the pool tests.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use futures_util::future::BoxFuture;

use crate::member::MemberSpec;
use crate::resolver::Lookup;
use crate::{Egress, EgressArgs, EgressSettings};

/// A server on 127.0.0.1 that records each request's peer address and
/// responds 204 to allowed peers, 403 to others.
pub struct Recorder {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<IpAddr>>>,
}

#[derive(Clone)]
struct RecorderState {
    peers: Arc<Mutex<Vec<IpAddr>>>,
    allowed: Option<Arc<Vec<IpAddr>>>,
}

impl Recorder {
    /// Starts a recorder; `allowed` of `None` accepts every peer.
    pub async fn start(allowed: Option<Vec<IpAddr>>) -> Self {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let state = RecorderState {
            peers: peers.clone(),
            allowed: allowed.map(Arc::new),
        };
        let router = Router::new()
            .route("/record", any(record))
            .route("/redirect", get(redirect))
            .with_state(state);
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

    /// Returns the peer address of every request so far.
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> url::Url {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }
}

async fn record(
    State(state): State<RecorderState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> impl IntoResponse {
    state.peers.lock().unwrap().push(peer.ip());
    let allowed = state
        .allowed
        .as_ref()
        .is_none_or(|allowed| allowed.contains(&peer.ip()));
    let status = if allowed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::FORBIDDEN
    };
    // A new connection per request, so every request is resolved again.
    (status, [(header::CONNECTION, "close")])
}

#[derive(serde::Deserialize)]
struct RedirectQuery {
    to: String,
}

async fn redirect(Query(query): Query<RedirectQuery>) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, query.to.parse().unwrap());
    (StatusCode::FOUND, headers)
}

/// A resolver that returns answers from a script: each lookup takes the next
/// answer, and the last answer repeats.
pub struct ScriptedLookup {
    host: String,
    answers: Mutex<VecDeque<Vec<IpAddr>>>,
    pub calls: Mutex<usize>,
}

impl ScriptedLookup {
    pub fn new(host: &str, answers: &[&[&str]]) -> Arc<Self> {
        let answers = answers
            .iter()
            .map(|answer| answer.iter().map(|ip| ip.parse().unwrap()).collect())
            .collect();
        Arc::new(Self {
            host: host.to_owned(),
            answers: Mutex::new(answers),
            calls: Mutex::new(0),
        })
    }
}

impl Lookup for ScriptedLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        *self.calls.lock().unwrap() += 1;
        let answer = if host == self.host {
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front()
            } else {
                answers.front().cloned()
            }
        } else {
            None
        };
        Box::pin(async move {
            answer.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such test host")
            })
        })
    }
}

/// Settings with short timeouts for loopback tests.
pub fn settings() -> EgressSettings {
    EgressSettings {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(5),
        max_redirects: 3,
        user_agent: "attache-egress-test".to_owned(),
    }
}

/// Builds a pool of `members` (direct when empty) that allows loopback.
pub fn pool(members: &[&str], lookup: Arc<dyn Lookup>) -> Egress {
    let args = EgressArgs {
        egress_members: members
            .iter()
            .map(|text| text.parse::<MemberSpec>().unwrap())
            .collect(),
        egress_allow_direct: members.is_empty(),
        egress_allow_cidrs: vec!["127.0.0.0/8".parse().unwrap()],
        egress_failure_threshold: 3,
        egress_skip_for: Duration::from_secs(30),
    };
    Egress::with_lookup(&args, &settings(), lookup).unwrap()
}

/// Returns a loopback port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
