//! A loopback HTTP server standing in for a customer's file host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

/// A file the source serves, with how to serve it.
#[derive(Clone)]
pub struct SourceFile {
    pub body: Bytes,
    pub content_type: &'static str,
    /// Whether to send the body in chunks without a Content-Length.
    pub chunked: bool,
    /// Number of requests that get `failure_status` before the file is
    /// served.
    pub failures: u32,
    pub failure_status: StatusCode,
    /// Time the source waits before it sends the response.
    pub delay: std::time::Duration,
}

impl SourceFile {
    pub fn new(body: impl Into<Bytes>, content_type: &'static str) -> Self {
        Self {
            body: body.into(),
            content_type,
            chunked: false,
            failures: 0,
            failure_status: StatusCode::SERVICE_UNAVAILABLE,
            delay: std::time::Duration::ZERO,
        }
    }

    pub fn delayed(mut self, delay: std::time::Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn failing_first(mut self, failures: u32, status: StatusCode) -> Self {
        self.failures = failures;
        self.failure_status = status;
        self
    }
}

#[derive(Clone, Default)]
struct Files {
    files: Arc<HashMap<String, SourceFile>>,
    hits: Arc<Mutex<HashMap<String, u32>>>,
}

/// A running source server on a loopback port.
pub struct Source {
    addr: SocketAddr,
    files: Files,
}

impl Source {
    pub async fn start(files: impl IntoIterator<Item = (&'static str, SourceFile)>) -> Self {
        let files = Files {
            files: Arc::new(
                files
                    .into_iter()
                    .map(|(name, file)| (name.to_owned(), file))
                    .collect(),
            ),
            hits: Arc::default(),
        };
        let router = Router::new()
            .route("/files/{name}", get(serve))
            .with_state(files.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port succeeds");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, files }
    }

    /// Returns the URL of `name` on this source.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/files/{name}", self.addr)
    }

    /// Returns the number of requests for `name` so far.
    pub fn hits(&self, name: &str) -> u32 {
        self.files
            .hits
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(State(files): State<Files>, Path(name): Path<String>) -> Response {
    let hit = {
        let mut hits = files.hits.lock().unwrap();
        let count = hits.entry(name.clone()).or_default();
        *count += 1;
        *count
    };
    let Some(file) = files.files.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    tokio::time::sleep(file.delay).await;
    if hit <= file.failures {
        return file.failure_status.into_response();
    }
    let content_type = [(header::CONTENT_TYPE, file.content_type)];
    if file.chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> = file
            .body
            .chunks(4096)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        return (content_type, body).into_response();
    }
    (content_type, file.body.clone()).into_response()
}
