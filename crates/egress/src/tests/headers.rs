//! Credentials across redirects: request headers go only to the first
//! URL's origin, and a redirect to a URL with a user name or password is
//! rejected.

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use super::servers::{Recorder, pool};
use crate::SendError;
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

#[tokio::test]
async fn redirect_with_credentials_is_rejected() {
    let first = Recorder::start(None).await;
    let target = Recorder::start(None).await;
    let egress = pool(&[], Arc::new(SystemLookup));
    for userinfo in ["user:pw@", "user@", ":pw@"] {
        let mut url = first.url("/redirect");
        let to = format!("http://{userinfo}{}/record", target.addr);
        url.query_pairs_mut().append_pair("to", &to);

        let sent = egress.get(url).await;
        let message = match sent.result {
            Err(SendError::Redirect(message)) => message,
            other => panic!("{to}: expected a rejected redirect, got {:?}", other.err()),
        };
        assert!(message.contains("user name or password"), "{message}");
        assert!(message.contains("give the final URL"), "{message}");
        assert!(
            !message.contains("pw"),
            "the message leaks the password: {message}"
        );
        assert_eq!(sent.member.as_deref(), Some("direct"));
    }
    assert!(target.peers().is_empty(), "{:?}", target.peers());
}
