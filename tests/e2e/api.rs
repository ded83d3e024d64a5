//! Tests of the task API's contract: validation errors per field,
//! authentication, team isolation and idempotency.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Deployment, Options};

/// Request headers as (name, value) pairs.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The routes that read a JSON body, with their methods.
const BODY_ROUTES: [(&str, &str); 4] = [
    ("POST", "/v1/tasks"),
    ("POST", "/v1/replays"),
    ("PUT", "/v1/integrations/aws"),
    ("POST", "/v1/integrations/gcp/verify"),
];

fn task(attachments: Value) -> Value {
    json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": attachments})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_request_error_names_field() {
    let deployment = Deployment::start(Options::default()).await;
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"uri": format!("http://127.0.0.1:9/{i}")}))
        .collect();
    let cases: Vec<(String, StatusCode, &str, Option<&str>)> = vec![
        ("not json".into(), StatusCode::BAD_REQUEST, "invalid_json", None),
        ("[]".into(), StatusCode::BAD_REQUEST, "invalid_json", None),
        (json!({"attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("callback_url")),
        (json!({"callback_url": "ftp://example.com/x", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_callback_url", Some("callback_url")),
        (json!({"callback_url": "https://user:pw@example.com/x", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_callback_url", Some("callback_url")),
        (task(json!([])).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("attachments")),
        (task(json!("http://127.0.0.1:9/a")).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("attachments")),
        (task(json!([{"uri": "http://127.0.0.1:9/a"}, {"url": "http://127.0.0.1:9/b"}])).to_string(), StatusCode::BAD_REQUEST, "unknown_field", Some("attachments[1].url")),
        (task(json!([{"uri": "http://127.0.0.1:9/a"}, {"uri": 7}])).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("attachments[1].uri")),
        (task(json!([{"uri": "http://127.0.0.1:9/a"}, {"uri": "not a uri"}])).to_string(), StatusCode::BAD_REQUEST, "invalid_uri", Some("attachments[1].uri")),
        (task(json!([{"uri": "ftp://example.com/a"}])).to_string(), StatusCode::BAD_REQUEST, "unsupported_scheme", Some("attachments[0].uri")),
        (task(json!([{"uri": "s3://bucket/"}])).to_string(), StatusCode::BAD_REQUEST, "invalid_uri", Some("attachments[0].uri")),
        (task(json!([{"uri": "s3://bucket/key"}])).to_string(), StatusCode::BAD_REQUEST, "unsupported_scheme", Some("attachments[0].uri")),
        (task(Value::Array(eleven)).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "too_many_attachments", Some("attachments")),
        (json!({"callback_url": "http://127.0.0.1:9/h", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": {"note": "x".repeat(2000)}}).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "metadata_too_large", Some("metadata")),
        (json!({"callback_url": "http://127.0.0.1:9/h", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": [1]}).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("metadata")),
        (json!({"callback_url": "http://127.0.0.1:9/h", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "callback": "x"}).to_string(), StatusCode::BAD_REQUEST, "unknown_field", Some("callback")),
        (format!("{{\"callback_url\": \"{}\"}}", "x".repeat(70 * 1024)), StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", None),
        (json!({"callback_url": "http:///hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_callback_url", Some("callback_url")),
        (json!({"callback_url": "http://127.0.0.1:0/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_callback_url", Some("callback_url")),
        (json!({"callback_url": "http://127.0.0.1:9/hooks\u{0}", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}).to_string(), StatusCode::BAD_REQUEST, "invalid_callback_url", Some("callback_url")),
        (json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": {"a": "x\u{0}y"}}).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("metadata")),
        (json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": {"k\u{0}": 1}}).to_string(), StatusCode::BAD_REQUEST, "invalid_request", Some("metadata")),
    ];
    for (body, status, code, field) in cases {
        let body_start = body.chars().take(120).collect::<String>();
        // The API responds 413 to an oversized body before reading it, and
        // may close the connection while the client is still sending, which
        // then gets no response. Such a request is sent again.
        let mut sent = None;
        for _ in 0..5 {
            match deployment
                .try_submit_raw(Some(&deployment.team.api_key), body.clone(), None)
                .await
            {
                Ok(response) => {
                    sent = Some(response);
                    break;
                }
                Err(failure) if code == "request_too_large" => {
                    eprintln!("{body_start}: no response ({failure}); sending it again");
                }
                Err(failure) => panic!("{body_start}: the API did not answer: {failure}"),
            }
        }
        let response = sent.expect("one of five oversized requests got a response");
        let actual_status = response.status();
        if code == "request_too_large" {
            assert_eq!(
                response.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{body_start}: a 413 before the body was read closes the connection"
            );
        }
        let error: serde_json::Value = response.json().await.expect("every answer is JSON");
        assert_eq!(actual_status, status, "{body_start}: {error}");
        assert_eq!(error["error"]["code"], code, "{body_start}: {error}");
        assert_eq!(
            error["error"]["field"].as_str(),
            field,
            "{body_start}: {error}"
        );
        assert!(
            error["error"]["message"].as_str().unwrap().len() > 20,
            "{body_start}: {error}"
        );
    }

    assert_eq!(
        deployment.row_count("tasks").await,
        0,
        "no rejected request left a task behind"
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_or_invalid_api_key_returns_401() {
    let deployment = Deployment::start(Options::default()).await;
    let body = task(json!([{"uri": "http://127.0.0.1:9/a"}])).to_string();
    for key in [None, Some("att_not-a-real-key"), Some("")] {
        let response = deployment
            .try_submit_raw(key, body.clone(), None)
            .await
            .expect("the API answers");
        let status = response.status();
        let challenge = response.headers().get("www-authenticate").cloned();
        let error: Value = response.json().await.expect("every answer is JSON");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}: {error}");
        assert_eq!(
            challenge.as_ref().map(|value| value.as_bytes()),
            Some(&b"Bearer"[..]),
            "{key:?}: a 401 names its scheme"
        );
        assert_eq!(error["error"]["code"], "unauthorized");
        assert_eq!(error["error"]["field"], "Authorization");
    }
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_teams_task_is_not_found() {
    let deployment = Deployment::start(Options::default()).await;
    let (status, accepted) = deployment
        .submit(&task(json!([{"uri": "http://127.0.0.1:9/a"}])), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let path = format!("/v1/tasks/{}", accepted["task_id"].as_str().unwrap());

    let (status, _) = deployment.get(&path, &deployment.team.api_key).await;
    assert_eq!(status, StatusCode::OK);
    let other = deployment.create_team("other").await;
    let (status, error) = deployment.get(&path, &other.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "task_not_found");
    let (status, error) = deployment.get("/v1/tasks/not-a-uuid", &other.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["field"], "task_id");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_key_replays_original_task() {
    let deployment = Deployment::start(Options::default()).await;
    let body = task(json!([{"uri": "http://127.0.0.1:9/a"}, {"uri": "http://127.0.0.1:9/b"}]));

    let (first_status, first) = deployment.submit(&body, Some("order-42")).await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    // The same body with its keys in another order counts as the same
    // request.
    let reordered: Value = serde_json::from_str(&format!(
        "{{\"attachments\": {}, \"callback_url\": \"http://127.0.0.1:9/hooks\"}}",
        body["attachments"]
    ))
    .unwrap();
    let (again_status, again) = deployment.submit(&reordered, Some("order-42")).await;
    assert_eq!(again_status, StatusCode::ACCEPTED);
    assert_eq!(again["task_id"], first["task_id"]);
    assert_eq!(again["attachments"], first["attachments"]);

    let changed = task(json!([{"uri": "http://127.0.0.1:9/c"}]));
    let (conflict_status, conflict) = deployment.submit(&changed, Some("order-42")).await;
    assert_eq!(conflict_status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_key_reused");
    assert_eq!(conflict["error"]["field"], "Idempotency-Key");

    // Another team may use the same key for its own task.
    let other = deployment.create_team("other").await;
    let (other_status, other_task) = deployment
        .submit_raw(Some(&other.api_key), body.to_string(), Some("order-42"))
        .await;
    assert_eq!(other_status, StatusCode::ACCEPTED);
    assert_ne!(other_task["task_id"], first["task_id"]);

    let (bad_status, bad) = deployment.submit(&body, Some("has space")).await;
    assert_eq!(bad_status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["error"]["code"], "invalid_idempotency_key");

    let database = deployment.database().await;
    let tasks: i64 = database
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    let attachments: i64 = database
        .query_one("SELECT count(*) FROM attachments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((tasks, attachments), (2, 4));
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_create_one_task() {
    let deployment = Deployment::start(Options::default()).await;
    let body = task(json!([{"uri": "http://127.0.0.1:9/a"}, {"uri": "http://127.0.0.1:9/b"}]));

    // Requests that arrive together are inserted in shared statements, where
    // the retries of one key must still find a single task.
    let keyed = (0..16).map(|_| deployment.submit(&body, Some("order-7")));
    let unkeyed = (0..16).map(|_| deployment.submit(&body, None));
    let (keyed, unkeyed) = tokio::join!(
        futures_util::future::join_all(keyed),
        futures_util::future::join_all(unkeyed)
    );

    let first = &keyed[0].1;
    for (status, accepted) in &keyed {
        assert_eq!(*status, StatusCode::ACCEPTED, "{accepted}");
        assert_eq!(accepted["task_id"], first["task_id"]);
        assert_eq!(accepted["attachments"], first["attachments"]);
    }
    let mut unkeyed_ids = std::collections::HashSet::new();
    for (status, accepted) in &unkeyed {
        assert_eq!(*status, StatusCode::ACCEPTED, "{accepted}");
        unkeyed_ids.insert(accepted["task_id"].to_string());
    }
    assert_eq!(
        unkeyed_ids.len(),
        16,
        "every request without a key is a task"
    );

    assert_eq!(deployment.row_count("tasks").await, 17);
    assert_eq!(deployment.row_count("attachments").await, 34);
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_metadata_numbers_read_back() {
    let deployment = Deployment::start(Options::default()).await;
    let metadata = json!({"large": 9.9e307, "small": -9.9e307, "tiny": 5e-324});
    let body = json!({
        "callback_url": "http://127.0.0.1:9/hooks",
        "attachments": [{"uri": "http://127.0.0.1:9/a"}],
        "metadata": metadata,
    });
    let (status, accepted) = deployment.submit(&body, Some("large-numbers")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");

    // Both the task view and an idempotent retry read the stored metadata.
    let task_id = accepted["task_id"].as_str().unwrap();
    let text = deployment
        .http
        .get(format!("http://{}/v1/tasks/{task_id}", deployment.api))
        .bearer_auth(&deployment.team.api_key)
        .send()
        .await
        .expect("the API answers")
        .text()
        .await
        .unwrap();
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["metadata"], metadata);
    // PostgreSQL prints these numbers with hundreds of digits.
    assert!(text.contains(r#""large":9.9e+307"#), "{text}");
    assert!(text.contains(r#""tiny":5e-324"#), "{text}");
    let (again, _) = deployment.submit(&body, Some("large-numbers")).await;
    assert_eq!(again, StatusCode::ACCEPTED);
    deployment.stop().await;
}

/// Opens a connection to the API and sends a POST to `path` that announces
/// `content_length` bytes of JSON but sends only `body_start`.
async fn send_partial_post(
    deployment: &Deployment,
    path: &str,
    content_length: usize,
    body_start: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;

    let mut stream = tokio::net::TcpStream::connect(deployment.api)
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n{body_start}",
        deployment.api, deployment.team.api_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_body_is_rejected_unread() {
    use tokio::io::AsyncReadExt;

    let deployment = Deployment::start(Options::default()).await;
    // Announce a body far over the limit and send none of it: the response
    // must come without waiting for the body.
    let mut stream = send_partial_post(&deployment, "/v1/tasks", 5_000_000, "").await;
    let mut response = vec![0; 1024];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read(&mut response),
    )
    .await
    .expect("the API answers before the body arrives")
    .unwrap();
    let response = String::from_utf8_lossy(&response[..read]);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("request_too_large"), "{response}");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_task_id_is_not_found() {
    let deployment = Deployment::start(Options::default()).await;
    let (status, error) = deployment
        .get("/v1/tasks/%FF", &deployment.team.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "task_not_found");
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_ignores_equivalent_spellings() {
    let deployment = Deployment::start(Options::default()).await;
    let spellings = [
        json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}]}),
        json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": null}),
        json!({"callback_url": "HTTP://127.0.0.1:9/hooks", "attachments": [{"uri": "http://127.0.0.1:9/a"}], "metadata": {}}),
        // Attachment URIs get the same scheme and host case rule as
        // callback_url.
        json!({"callback_url": "http://127.0.0.1:9/hooks", "attachments": [{"uri": "HTTP://127.0.0.1:9/a"}]}),
    ];
    let mut task_ids = Vec::new();
    for body in &spellings {
        let (status, accepted) = deployment.submit(body, Some("same-task")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}: {accepted}");
        task_ids.push(accepted["task_id"].clone());
    }
    assert_eq!(task_ids[0], task_ids[1]);
    assert_eq!(task_ids[0], task_ids[2]);
    assert_eq!(task_ids[0], task_ids[3]);
    deployment.stop().await;
}

/// Sends `body` with `headers` as this deployment's team and returns the
/// status and the JSON body, or the error of a request that got no response.
/// Panics if the response body is not JSON.
async fn send(
    deployment: &Deployment,
    (method, path): (&str, &str),
    headers: &[(&str, &str)],
    body: reqwest::Body,
) -> reqwest::Result<(StatusCode, Value)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = deployment
        .http
        .request(method, format!("http://{}{path}", deployment.api))
        .bearer_auth(&deployment.team.api_key)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status} is not a JSON error: {text}"));
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_chunked_body_returns_json_413() {
    let deployment = Deployment::start(Options::default()).await;
    for route in BODY_ROUTES {
        // A streamed body has no Content-Length, so the API finds that it
        // is over the 64 KiB limit only while reading it. The API may close
        // the connection before the client has sent the rest, and such a
        // request is sent again.
        let mut answer = None;
        for _ in 0..5 {
            let chunks = (0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 4096]));
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
            match send(
                &deployment,
                route,
                &[("content-type", "application/json")],
                body,
            )
            .await
            {
                Ok(response) => {
                    answer = Some(response);
                    break;
                }
                Err(failure) => eprintln!("{route:?}: no response ({failure}); sending it again"),
            }
        }
        let (status, error) = answer.expect("one of five oversized requests got a response");
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{route:?}: {error}");
        assert_eq!(error["error"]["code"], "request_too_large", "{route:?}");
    }
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_body_returns_408() {
    use tokio::io::AsyncReadExt;

    let deployment = Deployment::start(Options::default()).await;
    // Announce 100 bytes, send 10 and wait: the API gives up after its
    // 10 s body timeout.
    let mut stream = send_partial_post(&deployment, "/v1/replays", 100, r#"{"kind": ""#).await;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("the API answers within its body timeout")
    .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("\"code\":\"request_timeout\""),
        "{response}"
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn body_encoding_errors_name_header() {
    let deployment = Deployment::start(Options::default()).await;
    let cases: [(Headers, &[u8], StatusCode, Option<&str>); 4] = [
        (
            &[("content-type", "text/plain")],
            b"{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
        ),
        (
            &[("content-type", "application/x-www-form-urlencoded")],
            b"kind=attachments",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Type"),
        ),
        (
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            b"\x1f\x8b\x08\x00",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("Content-Encoding"),
        ),
        (
            &[("content-type", "application/json")],
            b"\xEF\xBB\xBF{}",
            StatusCode::BAD_REQUEST,
            None,
        ),
    ];
    for route in BODY_ROUTES {
        for (headers, body, status, field) in &cases {
            let (actual, error) = send(&deployment, route, headers, body.to_vec().into())
                .await
                .expect("the API answers");
            assert_eq!(actual, *status, "{route:?} {headers:?}: {error}");
            assert_eq!(
                error["error"]["field"].as_str(),
                *field,
                "{route:?}: {error}"
            );
            let message = error["error"]["message"].as_str().unwrap();
            let fix = match field {
                Some("Content-Type") => "Content-Type: application/json",
                Some(_) => "uncompressed",
                None => "byte order mark",
            };
            assert!(message.contains(fix), "{route:?}: {message}");
        }
    }
    assert_eq!(
        deployment.row_count("tasks").await,
        0,
        "no rejected request left a task behind"
    );
    deployment.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_json_type_is_not_reported_missing() {
    let deployment = Deployment::start(Options::default()).await;
    let attachments = json!([{"uri": "http://127.0.0.1:9/a"}]);
    let cases = [
        (
            "/v1/tasks",
            json!({"callback_url": 5, "attachments": attachments}),
            "callback_url",
            "callback_url must be a string, not a number",
        ),
        (
            "/v1/tasks",
            json!({"callback_url": "", "attachments": attachments}),
            "callback_url",
            "callback_url is empty",
        ),
        (
            "/v1/tasks",
            json!({"callback_url": "http://127.0.0.1:9/h", "attachments": {"uri": "http://127.0.0.1:9/a"}}),
            "attachments",
            "attachments must be a list, not an object",
        ),
        (
            "/v1/tasks",
            json!({"callback_url": "http://127.0.0.1:9/h", "attachments": [{"uri": 7}]}),
            "attachments[0].uri",
            "attachments[0].uri must be a string, not a number",
        ),
        (
            "/v1/tasks",
            json!({"callback_url": "http://127.0.0.1:9/h", "attachments": [{"uri": "gs://bucket/object"}]}),
            "attachments[0].uri",
            "Google Cloud Storage (gs://) attachments are not enabled",
        ),
        (
            "/v1/replays",
            json!({"kind": "tasks"}),
            "kind",
            "`tasks` is not a replay kind",
        ),
        (
            "/v1/replays",
            json!({"kind": ["attachments"]}),
            "kind",
            "kind must be a string, not a list",
        ),
    ];
    for (path, body, field, start) in cases {
        let (status, error) = deployment.post(path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(start), "{body}: {message}");
    }
    deployment.stop().await;
}
