//! `POST /v1/replays`: queue the calling team's failed attachments or dead
//! callbacks again, for example every attachment that failed with
//! `access_denied` since yesterday, once the bucket policy is fixed.

use attache_domain::{ErrorCode, TaskId};
use attache_store::replay::ReplayFilter;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::AppState;
use super::auth::Caller;
use super::body::{JsonBody, json_type};
use super::error::ApiError;

/// The kind of rows a replay request selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayKind {
    Attachments,
    Callbacks,
}

/// The response to a replay.
#[derive(Serialize)]
pub struct Replayed {
    kind: ReplayKind,
    replayed: usize,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(team): Caller,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let (kind, mut filter) = parse(&body)?;
    filter.team_id = Some(team.id);
    let replayed = match kind {
        ReplayKind::Attachments => state.store().replay_attachments(&filter).await?.len(),
        ReplayKind::Callbacks => state.store().replay_callbacks(&filter).await?.len(),
    };
    state.wake_relay();
    tracing::info!(team_id = %team.id, ?kind, replayed, "replay queued");
    Ok((StatusCode::ACCEPTED, Json(Replayed { kind, replayed })))
}

/// Validates a replay request body.
pub fn parse(body: &[u8]) -> Result<(ReplayKind, ReplayFilter), ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON ({error}): send an object such as {{\"kind\": \"attachments\"}}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object such as {\"kind\": \"attachments\"}",
        ));
    };
    const FIELDS: [&str; 5] = ["kind", "task_id", "error_code", "since", "until"];
    if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ApiError::field(
            "unknown_field",
            unknown.clone(),
            format!(
                "`{unknown}` is not a replay field: the fields are kind, task_id, error_code, since and until"
            ),
        ));
    }

    let kind = kind(object.get("kind"))?;
    let filter = ReplayFilter {
        team_id: None,
        task_id: optional_text(&object, "task_id")?
            .map(|text| {
                text.parse::<TaskId>().map_err(|_| {
                    ApiError::field(
                        "invalid_request",
                        "task_id",
                        "task_id must be a task id (a UUID) returned by POST /v1/tasks",
                    )
                })
            })
            .transpose()?,
        error_code: error_code(&object, kind)?,
        since: timestamp(&object, "since")?,
        until: timestamp(&object, "until")?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(ApiError::field(
            "invalid_request",
            "until",
            "until must be later than since",
        ));
    }
    Ok((kind, filter))
}

fn kind(value: Option<&Value>) -> Result<ReplayKind, ApiError> {
    let kinds = "\"attachments\" replays failed attachments, \"callbacks\" replays dead callbacks";
    let reason = match value {
        Some(Value::String(text)) if text == "attachments" => return Ok(ReplayKind::Attachments),
        Some(Value::String(text)) if text == "callbacks" => return Ok(ReplayKind::Callbacks),
        Some(Value::String(text)) => format!("`{text}` is not a replay kind"),
        None | Some(Value::Null) => "kind is required".to_owned(),
        Some(other) => format!("kind must be a string, not {}", json_type(other)),
    };
    Err(ApiError::field(
        "invalid_request",
        "kind",
        format!("{reason}: {kinds}"),
    ))
}

fn optional_text<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(ApiError::field(
            "invalid_request",
            field,
            format!("{field} must be a string, not {}", json_type(other)),
        )),
    }
}

fn error_code(
    object: &Map<String, Value>,
    kind: ReplayKind,
) -> Result<Option<ErrorCode>, ApiError> {
    let Some(text) = optional_text(object, "error_code")? else {
        return Ok(None);
    };
    if kind == ReplayKind::Callbacks {
        return Err(ApiError::field(
            "invalid_request",
            "error_code",
            "error_code filters attachments only: remove it to replay dead callbacks",
        ));
    }
    text.parse().map(Some).map_err(|_| {
        let known: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        ApiError::field(
            "invalid_request",
            "error_code",
            format!(
                "`{text}` is not an error code; use one of {}",
                known.join(", ")
            ),
        )
    })
}

fn timestamp(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(text) = optional_text(object, field)? else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(text)
        .map(|time| Some(time.with_timezone(&Utc)))
        .map_err(|_| {
            ApiError::field(
                "invalid_request",
                field,
                format!("{field} must be an RFC 3339 time such as 2026-12-03T00:00:00Z"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(body: &str) -> (String, Option<String>) {
        let error = parse(body.as_bytes()).unwrap_err();
        (error.code.to_owned(), error.field)
    }

    #[test]
    fn filters_parse_from_every_field() {
        let (kind, filter) = parse(
            br#"{"kind": "attachments", "task_id": "01a241bb-2764-761a-b971-95457ae854b8",
                 "error_code": "access_denied", "since": "2026-12-03T00:00:00Z", "until": "2026-12-04T00:00:00+01:00"}"#,
        )
        .unwrap();
        assert_eq!(kind, ReplayKind::Attachments);
        assert_eq!(filter.error_code, Some(ErrorCode::AccessDenied));
        assert!(filter.task_id.is_some());
        assert_eq!(
            filter.until.unwrap().to_rfc3339(),
            "2026-12-03T23:00:00+00:00"
        );
    }

    #[test]
    fn invalid_filters_name_their_field() {
        let cases = [
            ("{}", "kind"),
            (r#"{"kind": "tasks"}"#, "kind"),
            (r#"{"kind": "attachments", "task_id": "x"}"#, "task_id"),
            (
                r#"{"kind": "attachments", "error_code": "nope"}"#,
                "error_code",
            ),
            (
                r#"{"kind": "callbacks", "error_code": "not_found"}"#,
                "error_code",
            ),
            (r#"{"kind": "attachments", "since": "yesterday"}"#, "since"),
            (
                r#"{"kind": "attachments", "since": "2026-12-04T00:00:00Z", "until": "2026-12-03T00:00:00Z"}"#,
                "until",
            ),
            (r#"{"kind": "attachments", "team_id": "x"}"#, "team_id"),
        ];
        for (body, field) in cases {
            assert_eq!(rejected(body).1.as_deref(), Some(field), "{body}");
        }
        assert_eq!(rejected("[]").0, "invalid_json");
    }

    #[test]
    fn kind_errors_say_what_is_wrong() {
        let message = |body: &str| parse(body.as_bytes()).unwrap_err().message;
        assert!(message("{}").starts_with("kind is required"));
        assert!(message(r#"{"kind": null}"#).starts_with("kind is required"));
        assert!(message(r#"{"kind": "tasks"}"#).starts_with("`tasks` is not a replay kind"));
        assert!(message(r#"{"kind": 5}"#).starts_with("kind must be a string, not a number"));
        assert!(
            message(r#"{"kind": "attachments", "since": 5}"#)
                .starts_with("since must be a string, not a number")
        );
    }
}
