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

/// One request as received.
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
        serde_json::from_str(&self.body).expect("a callback body is JSON")
    }
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<ReceivedCallback>>>,
    /// Statuses to answer, in order; 204 once it runs out.
    plan: Arc<Mutex<VecDeque<StatusCode>>>,
}

/// A running receiver.
pub struct Receiver {
    addr: SocketAddr,
    shared: Shared,
}

impl Receiver {
    /// Starts a receiver that answers `plan` in order, then 204.
    pub async fn start(plan: impl IntoIterator<Item = StatusCode>) -> Self {
        let shared = Shared {
            received: Arc::default(),
            plan: Arc::new(Mutex::new(plan.into_iter().collect())),
        };
        let router = Router::new()
            .route("/hooks", post(receive))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived, and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedCallback> {
        eventually(Duration::from_secs(30), "callbacks to arrive", || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
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
