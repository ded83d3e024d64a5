//! Request headers across redirects: a credential goes only to the first
//! URL's origin.

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use super::servers::pool;
use crate::resolver::SystemLookup;

#[derive(serde::Deserialize)]
struct RedirectQuery {
    to: String,
}

/// Starts a server whose `/redirect?to=` returns 302 and whose
/// `/authorization` returns the request's Authorization header, or
/// nothing.
async fn start_server() -> String {
    let router = Router::new()
        .route(
            "/redirect",
            get(|Query(query): Query<RedirectQuery>| async move {
                (StatusCode::FOUND, [(header::LOCATION, query.to)])
            }),
        )
        .route(
            "/authorization",
            get(|headers: HeaderMap| async move {
                headers
                    .get(header::AUTHORIZATION)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_default()
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn authorization_seen(first: &str, target: &str) -> String {
    let egress = pool(&[], Arc::new(SystemLookup));
    let mut url: url::Url = format!("{first}/redirect").parse().unwrap();
    url.query_pairs_mut()
        .append_pair("to", &format!("{target}/authorization"));
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
    let sent = egress.get_with_headers(url, headers).await;
    let response = sent.result.expect("the redirect is followed");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test]
async fn headers_follow_same_origin_redirect() {
    let server = start_server().await;
    assert_eq!(authorization_seen(&server, &server).await, "Bearer secret");
}

#[tokio::test]
async fn headers_dropped_on_cross_origin_redirect() {
    let first = start_server().await;
    let other = start_server().await;
    assert_eq!(authorization_seen(&first, &other).await, "");
}
