//! `POST /v1/tasks` and `GET /v1/tasks/{task_id}`.

use std::sync::Arc;

use attache_domain::{AttachmentId, TaskId, TaskStatus};
use attache_store::tasks::{Inserted, NewAttachment, NewTask, TaskView};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use super::body::JsonBody;
use super::error::ApiError;
use super::validate;

/// The 202 response body for an accepted task.
#[derive(Serialize)]
struct Accepted {
    task_id: TaskId,
    status: TaskStatus,
    attachments: Vec<AcceptedAttachment>,
}

#[derive(Serialize)]
struct AcceptedAttachment {
    attachment_id: AttachmentId,
    uri: String,
}

pub async fn create(
    State(state): State<AppState>,
    Caller(team): Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let idempotency_key = validate::idempotency_key(&headers)?;
    let request = validate::task_request(&body, state.limits(), state.policy(), &|provider| {
        state.enabled(provider)
    })?;

    let task = Arc::new(NewTask {
        id: TaskId::new(),
        team_id: team.id,
        callback_url: request.callback_url,
        metadata: request.metadata,
        idempotency_key,
        request_hash: request.request_hash,
        attachments: request
            .attachments
            .into_iter()
            .map(|(uri, provider)| NewAttachment {
                id: AttachmentId::new(),
                uri,
                provider,
            })
            .collect(),
    });
    match state.insert_task(task.clone()).await? {
        Inserted::Created => {
            tracing::info!(task_id = %task.id, team_id = %team.id, attachments = task.attachments.len(), "task accepted");
            let accepted = Accepted {
                task_id: task.id,
                status: TaskStatus::Pending,
                attachments: task
                    .attachments
                    .iter()
                    .map(|a| AcceptedAttachment {
                        attachment_id: a.id,
                        uri: a.uri.clone(),
                    })
                    .collect(),
            };
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Inserted::Existing {
            task_id,
            request_hash,
        } => replay(&state, team.id, task_id, request_hash == task.request_hash).await,
    }
}

/// Responds to a request whose idempotency key was used before. Returns the
/// original task if the body is the same, and a 409 error if not.
async fn replay(
    state: &AppState,
    team_id: attache_domain::TeamId,
    task_id: TaskId,
    same_body: bool,
) -> Result<Response, ApiError> {
    if !same_body {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            format!("this Idempotency-Key was already used for task {task_id} with a different body: use a new key for a new task"),
        )
        .at("Idempotency-Key"));
    }
    let view = state
        .store()
        .task_view(team_id, task_id)
        .await?
        .ok_or_else(|| {
            ApiError::internal(format!(
                "task {task_id} not found after its idempotency key matched"
            ))
        })?;
    let accepted = Accepted {
        task_id,
        status: view.status,
        attachments: view
            .attachments
            .into_iter()
            .map(|a| AcceptedAttachment {
                attachment_id: a.attachment_id,
                uri: a.uri,
            })
            .collect(),
    };
    Ok((
        StatusCode::ACCEPTED,
        [("idempotent-replayed", "true")],
        Json(accepted),
    )
        .into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Caller(team): Caller,
    task_id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskView>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "task_not_found",
            "no task with this id belongs to your team: check the id returned when the task was accepted",
        )
        .at("task_id")
    };
    let Ok(Path(task_id)) = task_id else {
        return Err(not_found());
    };
    let task_id: TaskId = task_id.parse().map_err(|_| not_found())?;
    let view = state.store().task_view(team.id, task_id).await?;
    view.map(Json).ok_or_else(not_found)
}
