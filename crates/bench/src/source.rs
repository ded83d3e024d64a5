//! A loopback attachment source that generates bytes instead of storing
//! them.
//!
//! `GET /bytes/{size}/{name}` returns `size` bytes of a repeating pattern
//! with their Content-Length. Every body is cut from one shared 64 KiB
//! buffer and streamed chunk by chunk, so a 2 GiB response takes no more
//! memory than a 4 KiB one. The name only makes each URL distinct.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use clap::Args;

/// Bytes per streamed chunk, and the size of the shared pattern.
const CHUNK_BYTES: u64 = 64 * 1024;

#[derive(Args)]
pub struct SourceArgs {
    /// TCP port on 127.0.0.1, or 0 to let the kernel pick one.
    #[arg(long, default_value_t = 0)]
    port: u16,
}

pub async fn run(args: SourceArgs) -> anyhow::Result<()> {
    // Any content serves, because the fleet only hashes and stores it.
    let pattern: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i % 251) as u8).collect();
    let app = Router::new()
        .route("/bytes/{size}", get(serve_bytes))
        .route("/bytes/{size}/{*name}", get(serve_bytes))
        .with_state(Bytes::from(pattern));
    crate::serve(app, args.port).await
}

async fn serve_bytes(
    State(pattern): State<Bytes>,
    Path(parameters): Path<HashMap<String, String>>,
) -> axum::response::Response {
    let Some(size) = parameters
        .get("size")
        .and_then(|size| size.parse::<u64>().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "the size in /bytes/{size} must be a whole number of bytes",
        )
            .into_response();
    };
    let body = if size <= CHUNK_BYTES {
        Body::from(pattern.slice(..size as usize))
    } else {
        let chunks = (0..size.div_ceil(CHUNK_BYTES)).map(move |index| {
            let length = CHUNK_BYTES.min(size - index * CHUNK_BYTES);
            Ok::<_, Infallible>(pattern.slice(..length as usize))
        });
        Body::from_stream(futures_util::stream::iter(chunks))
    };
    Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, size)
        .body(body)
        .expect("a status, two valid headers and a body always build a response")
}
