//! Loopback proxies' shared parts: forwarding a request to the server
//! behind them, and serving a router on a free loopback port.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The server that a loopback proxy forwards to.
pub struct Upstream {
    client: reqwest::Client,
    endpoint: String,
}

impl Upstream {
    pub fn new(endpoint: &str) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building a reqwest client succeeds");
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        Self { client, endpoint }
    }

    /// Streams the request to the upstream server and its response back,
    /// without hop-by-hop headers. The Host header is kept, because SigV4
    /// signs it and moto checks the signature. reqwest adds `accept: */*` to a
    /// request without an Accept header, which the signature then does not
    /// cover, so moto's check still passes.
    pub async fn forward(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |value| value.as_str());
        let url = format!("{}{path_and_query}", self.endpoint);
        remove_hop_by_hop(&mut parts.headers);
        let sent = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let message = format!("forwarding to {} failed: {error}", self.endpoint);
                return (StatusCode::BAD_GATEWAY, message).into_response();
            }
        };

        let status = response.status();
        let mut headers = response.headers().clone();
        remove_hop_by_hop(&mut headers);
        let mut reply = Body::from_stream(response.bytes_stream()).into_response();
        *reply.status_mut() = status;
        *reply.headers_mut() = headers;
        reply
    }
}

/// Headers that describe one connection rather than the message.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Serves `router` on a free loopback port and returns its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port succeeds");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Serves `router` on a free loopback port with peer addresses available
/// to handlers, and returns its address.
pub async fn serve_with_peers(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port succeeds");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}
