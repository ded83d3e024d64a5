//! `/v1/integrations/gcp`: a team's Cloud Storage access by impersonation.
//!
//! GET shows what the team needs to set up: our service account, the
//! team's identifier and a service account name that contains it. PUT
//! validates the team's service account email (see
//! `attache_gcp::integration`), mints a token for it and only then
//! activates impersonation; DELETE deactivates it, so cross-project access
//! with our own service account applies again. POST `/verify` runs a
//! fetch's access path for one `gs://` URI without storing anything.

use std::sync::Arc;

use attache_domain::AttachmentRef;
use attache_gcp::integration::{
    LinkError, OBJECT_VIEWER_ROLE, TOKEN_CREATOR_ROLE, generate_identifier, suggested_account_id,
    validate_service_account,
};
use attache_gcp::storage::{Reader, classify_status, error_detail};
use attache_gcp::{Gcp, TokenError};
use attache_store::teams::Team;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};

use super::object;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;

fn gcp(state: &AppState) -> Result<&Arc<Gcp>, ApiError> {
    state.gcp().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "integration_not_configured",
            "this deployment has no Google Cloud service account configured, so gs:// attachments and GCP settings are unavailable: ask the operator to set ATTACHE_GCP_SERVICE_ACCOUNT",
        )
    })
}

pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let gcp = gcp(&state)?;
    Ok(Json(settings(&state, gcp, &team).await?))
}

pub async fn link(
    State(state): State<AppState>,
    Caller(team): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let gcp = gcp(&state)?;
    let service_account = parse_link(&body)?;
    let identifier = identifier(&state, &team).await?;
    validate_service_account(&service_account, &identifier).map_err(|message| {
        ApiError::field("invalid_service_account", "service_account", message)
    })?;
    gcp.check_link(&service_account).await.map_err(|error| {
        let status = match error {
            LinkError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            LinkError::CannotImpersonate { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, "gcp_link_failed", error.to_string()).at("service_account")
    })?;
    state.store().link_gcp(team.id, &service_account).await?;
    tracing::info!(team_id = %team.id, "GCP impersonation activated");
    Ok(Json(settings(&state, gcp, &team).await?))
}

pub async fn unlink(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let gcp = gcp(&state)?;
    state.store().unlink_gcp(team.id).await?;
    tracing::info!(team_id = %team.id, "GCP impersonation deactivated");
    Ok(Json(settings(&state, gcp, &team).await?))
}

pub async fn verify(
    State(state): State<AppState>,
    Caller(team): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let gcp = gcp(&state)?;
    let (bucket, object) = parse_verify(&body)?;
    let uri = format!("gs://{bucket}/{object}");
    let integration = state.store().gcp_integration(team.id).await?;
    let impersonated = match (&integration.linked_at, &integration.service_account) {
        (Some(_), Some(service_account)) => Some(service_account.as_str()),
        _ => None,
    };
    let access_path = if impersonated.is_some() {
        "impersonated"
    } else {
        "cross_project"
    };
    let mut steps = Vec::new();

    let (token, reader) = match impersonated {
        Some(service_account) => match gcp.impersonated_token(service_account).await {
            Ok(token) => {
                steps.push(json!({"step": "impersonate", "ok": true, "detail": format!("minted a token for {service_account}")}));
                (token, Reader::Impersonated(service_account))
            }
            Err(error) => {
                let fix = match &error {
                    TokenError::Denied(_) => format!(
                        "grant {} the role Service Account Token Creator ({TOKEN_CREATOR_ROLE}) on {service_account}",
                        gcp.service_account()
                    ),
                    _ => "try again in a minute".to_owned(),
                };
                steps.push(json!({"step": "impersonate", "ok": false, "detail": error.to_string(), "fix": fix}));
                return Ok(Json(
                    json!({"uri": uri, "access_path": access_path, "ok": false, "steps": steps}),
                ));
            }
        },
        None => match gcp.own_token().await {
            Ok(token) => {
                steps.push(json!({"step": "impersonate", "ok": true, "detail": format!("not needed: without impersonation, Attaché's own service account {} reads the object (cross-project)", gcp.service_account())}));
                (token, Reader::Own(gcp.service_account()))
            }
            Err(error) => {
                steps.push(json!({"step": "own_token", "ok": false, "detail": error.to_string(), "fix": "try again in a minute"}));
                return Ok(Json(
                    json!({"uri": uri, "access_path": access_path, "ok": false, "steps": steps}),
                ));
            }
        },
    };

    let sent = gcp.get_object(&token, &bucket, &object).await;
    let ok = match sent.result {
        Ok(response) if response.status().is_success() => {
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value: &reqwest::header::HeaderValue| value.to_str().ok())
                    .unwrap_or("unknown")
                    .to_owned()
            };
            let detail = format!(
                "readable: {} bytes, content type {}",
                header(CONTENT_LENGTH),
                header(CONTENT_TYPE)
            );
            steps.push(json!({"step": "get_object", "ok": true, "detail": detail}));
            true
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let detail = error_detail(response).await;
            let (code, message) = classify_status(status, reader, &bucket, &detail);
            steps.push(json!({"step": "get_object", "ok": false, "code": code.as_str(), "detail": message}));
            false
        }
        Err(error) => {
            steps.push(json!({"step": "get_object", "ok": false, "detail": format!("the request was not answered ({error}); try again in a minute")}));
            false
        }
    };
    Ok(Json(
        json!({"uri": uri, "access_path": access_path, "ok": ok, "egress_member": sent.member, "steps": steps}),
    ))
}

/// Returns the team's identifier, generating it on first use.
async fn identifier(state: &AppState, team: &Team) -> Result<String, ApiError> {
    // NOTE: a generated identifier that another team already has fails
    // the UNIQUE constraint and this request; with 36^8 possible values
    // that is not expected to happen.
    Ok(state
        .store()
        .ensure_gcp_identifier(team.id, &generate_identifier())
        .await?)
}

/// The team's settings as GET, PUT and DELETE return them.
async fn settings(state: &AppState, gcp: &Gcp, team: &Team) -> Result<Value, ApiError> {
    let identifier = identifier(state, team).await?;
    let integration = state.store().gcp_integration(team.id).await?;
    Ok(json!({
        "our_service_account": gcp.service_account(),
        "identifier": identifier,
        "suggested_service_account_id": suggested_account_id(&identifier),
        "service_account": integration.service_account,
        "impersonation_active": integration.linked_at.is_some(),
        "linked_at": integration.linked_at,
        "token_creator_role": TOKEN_CREATOR_ROLE,
        "object_viewer_role": OBJECT_VIEWER_ROLE,
    }))
}

fn parse_link(body: &[u8]) -> Result<String, ApiError> {
    let object = object(body, &["service_account"])?;
    let Some(Value::String(service_account)) = object.get("service_account") else {
        return Err(ApiError::field(
            "invalid_request",
            "service_account",
            "service_account is required: the email of your service account, as a string",
        ));
    };
    Ok(service_account.clone())
}

fn parse_verify(body: &[u8]) -> Result<(String, String), ApiError> {
    let object = object(body, &["uri"])?;
    let Some(Value::String(uri)) = object.get("uri") else {
        return Err(ApiError::field(
            "invalid_request",
            "uri",
            "uri is required: a gs://bucket/object URI",
        ));
    };
    match AttachmentRef::parse(uri) {
        Ok(AttachmentRef::Gcs { bucket, object }) => Ok((bucket, object)),
        Ok(other) => Err(ApiError::field(
            "invalid_uri",
            "uri",
            format!(
                "this checks Cloud Storage access, but the URI is {} URI: give a gs://bucket/object URI",
                other.provider().name_with_article()
            ),
        )),
        Err(error) => Err(ApiError::field("invalid_uri", "uri", error.message())),
    }
}
