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

use attache_domain::{AttachmentRef, TeamId};
use attache_gcp::integration::{
    LinkError, OBJECT_VIEWER_ROLE, TOKEN_CREATOR_ROLE, generate_identifier, suggested_account_id,
    validate_service_account,
};
use attache_gcp::storage::{Reader, classify_status, error_detail};
use attache_gcp::{Gcp, TokenError};
use attache_store::teams::Team;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};

use super::object;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{JsonBody, required_string};
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
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let gcp = gcp(&state)?;
    let service_account = parse_link(&body)?;
    let identifier = identifier(&state, &team).await?;
    validate_service_account(&service_account, &identifier).map_err(|message| {
        ApiError::field("invalid_service_account", "service_account", message)
    })?;
    gcp.check_link(&service_account)
        .await
        .map_err(|error| link_error(error, team.id))?;
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
    JsonBody(body): JsonBody,
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

/// Turns a failed impersonation check into the response. When IAM
/// Credentials cannot be reached, the cause is logged, because it names our
/// endpoint, and the message tells the customer to retry.
fn link_error(error: LinkError, team_id: TeamId) -> ApiError {
    match error {
        LinkError::Unavailable(detail) => {
            tracing::warn!(%team_id, error = %detail, "GCP impersonation check could not reach IAM Credentials");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gcp_link_failed",
                "Google Cloud IAM Credentials could not be reached, so the service account was not checked and nothing changed: send the same request again in a minute",
            )
        }
        denied @ LinkError::CannotImpersonate { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "gcp_link_failed",
            denied.to_string(),
        ),
    }
    .at("service_account")
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
    let service_account = required_string(
        object.get("service_account"),
        "service_account",
        "the email of your service account as a string",
    )?;
    Ok(service_account.to_owned())
}

fn parse_verify(body: &[u8]) -> Result<(String, String), ApiError> {
    let object = object(body, &["uri"])?;
    let uri = required_string(
        object.get("uri"),
        "uri",
        "a gs://bucket/object URI as a string",
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_iam_hides_transport_detail() {
        let detail = "error sending request for url (https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x:generateAccessToken)";
        let error = link_error(LinkError::Unavailable(detail.to_owned()), TeamId::new());
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "gcp_link_failed");
        assert_eq!(error.field.as_deref(), Some("service_account"));
        assert!(!error.message.contains("googleapis"), "{}", error.message);
        assert!(error.message.contains("again"), "{}", error.message);
    }

    #[test]
    fn wrong_type_service_account_is_not_missing() {
        let error = parse_link(br#"{"service_account": 7}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("service_account"));
        assert!(
            error
                .message
                .starts_with("service_account must be a string"),
            "{}",
            error.message
        );
    }
}
