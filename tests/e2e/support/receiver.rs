//! A loopback HTTP server standing in for a customer's callback endpoint.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

use super::eventually;

/// One callback request, with its Standard Webhooks headers and raw body.
#[derive(Clone, Debug)]
pub struct ReceivedCallback {
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: String,
}

impl ReceivedCallback {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a callback body is valid JSON")
    }
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<ReceivedCallback>>>,
    /// Statuses to respond with, in order. Later requests get 204.
    plan: Arc<Mutex<VecDeque<StatusCode>>>,
    /// How long each response takes.
    delay: Duration,
}

/// A running callback receiver on a loopback port.
pub struct Receiver {
    addr: SocketAddr,
    shared: Shared,
}

impl Receiver {
    /// Starts a receiver that responds with the statuses in `plan`, in
    /// order, and with 204 after that.
    pub async fn start(plan: impl IntoIterator<Item = StatusCode>) -> Self {
        Self::start_slow(plan, Duration::ZERO).await
    }

    /// Starts a receiver that takes `delay` to answer each request.
    pub async fn start_slow(plan: impl IntoIterator<Item = StatusCode>, delay: Duration) -> Self {
        let shared = Shared {
            received: Arc::default(),
            plan: Arc::new(Mutex::new(plan.into_iter().collect())),
            delay,
        };
        let router = Router::new()
            .route("/hooks", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port succeeds");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Returns every request received so far.
    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits up to 30 s until at least `count` requests have arrived, and
    /// returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedCallback> {
        eventually(Duration::from_secs(30), "callbacks to arrive", || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    tokio::time::sleep(shared.delay).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    shared.received.lock().unwrap().push(ReceivedCallback {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body,
    });
    shared
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(StatusCode::NO_CONTENT)
}
