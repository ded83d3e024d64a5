//! `/v1/integrations/aws`: a team's delegated S3 access.
//!
//! GET shows what the team needs to set up (our account, the role name,
//! its External ID, ready-to-paste policies). PUT activates delegation for
//! the team's account after checking the role (see
//! `attache_aws::integration`); DELETE deactivates it. POST `/verify` runs a
//! fetch's access path for one `s3://` URI without storing anything.

use std::sync::Arc;

use attache_aws::integration::{
    LinkError, generate_external_id, permission_policy, validate_account_id,
};
use attache_aws::{AssumeError, Aws, Identity};
use attache_domain::{AttachmentRef, TeamId};
use attache_store::teams::Team;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::object;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{JsonBody, required_string};
use crate::api::error::ApiError;

/// The bucket placeholder in the sample permission policy.
const BUCKET_PLACEHOLDER: &str = "YOUR-BUCKET";

fn aws(state: &AppState) -> Result<&Arc<Aws>, ApiError> {
    state.aws().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "integration_not_configured",
            "this deployment has no AWS account configured, so s3:// attachments and AWS settings are unavailable: ask the operator to set ATTACHE_AWS_ACCOUNT_ID",
        )
    })
}

pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let aws = aws(&state)?;
    Ok(Json(settings(&state, aws, &team).await?))
}

pub async fn link(
    State(state): State<AppState>,
    Caller(team): Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let aws = aws(&state)?;
    let (account_id, owners) = parse_link(&body)?;
    let external_id = state
        .store()
        .ensure_aws_external_id(team.id, &generate_external_id())
        .await?;
    aws.check_link(&account_id, &external_id)
        .await
        .map_err(|error| link_error(error, team.id))?;
    state
        .store()
        .link_aws(team.id, &account_id, &owners)
        .await?;
    tracing::info!(team_id = %team.id, "AWS delegated access activated");
    Ok(Json(settings(&state, aws, &team).await?))
}

pub async fn unlink(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let aws = aws(&state)?;
    state.store().unlink_aws(team.id).await?;
    tracing::info!(team_id = %team.id, "AWS delegated access deactivated");
    Ok(Json(settings(&state, aws, &team).await?))
}

pub async fn verify(
    State(state): State<AppState>,
    Caller(team): Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let aws = aws(&state)?;
    let (bucket, key) = parse_verify(&body)?;
    let integration = state.store().aws_integration(team.id).await?;
    let delegation = match (
        &integration.linked_at,
        &integration.account_id,
        &integration.external_id,
    ) {
        (Some(_), Some(account_id), Some(external_id)) => {
            Some((account_id.as_str(), external_id.as_str()))
        }
        _ => None,
    };
    let mut steps = Vec::new();
    let access_path = if delegation.is_some() {
        "delegated"
    } else {
        "cross_account"
    };

    let identity = match aws.identity(delegation).await {
        Ok(identity) => identity,
        Err(error) => {
            let (detail, fix) = match error {
                AssumeError::Denied(detail) => (
                    detail,
                    format!(
                        "the role's trust policy must name {} and require your External ID",
                        aws.principal_arn()
                    ),
                ),
                AssumeError::Unavailable(detail) => (detail, "try again in a minute".to_owned()),
            };
            steps.push(json!({"step": "assume_role", "ok": false, "detail": detail, "fix": fix}));
            return Ok(Json(
                json!({"uri": format!("s3://{bucket}/{key}"), "access_path": access_path, "ok": false, "steps": steps}),
            ));
        }
    };
    match &identity {
        Identity::Role { role_arn, .. } => steps.push(json!({"step": "assume_role", "ok": true, "detail": format!("assumed {role_arn}")})),
        Identity::Own => steps.push(json!({"step": "assume_role", "ok": true, "detail": "not needed: without delegated access, Attaché's own identity reads the object (cross-account)"})),
    }
    let ok = match aws
        .get_object(&identity, &bucket, &key, &integration.bucket_owners)
        .await
    {
        Ok(object) => {
            let detail = format!(
                "readable: {} bytes, content type {}",
                object
                    .content_length
                    .map_or("unknown".to_owned(), |length| length.to_string()),
                object.content_type.as_deref().unwrap_or("unknown")
            );
            steps.push(json!({"step": "get_object", "ok": true, "detail": detail}));
            true
        }
        Err(error) => {
            steps.push(json!({"step": "get_object", "ok": false, "code": error.code.as_str(), "detail": error.message}));
            false
        }
    };
    Ok(Json(
        json!({"uri": format!("s3://{bucket}/{key}"), "access_path": access_path, "ok": ok, "steps": steps}),
    ))
}

/// Turns a failed role check into the response. When STS cannot be
/// reached, the cause is logged and the message tells the customer to retry.
fn link_error(error: LinkError, team_id: TeamId) -> ApiError {
    if let LinkError::Unavailable(detail) = &error {
        tracing::warn!(%team_id, error = %detail, "AWS role check could not reach STS");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "aws_link_failed",
            "AWS STS could not be reached, so the role was not checked and nothing changed: send the same request again in a minute",
        )
        .at("account_id");
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "aws_link_failed",
        error.to_string(),
    )
    .at("account_id")
}

/// The team's settings as GET, PUT and DELETE return them.
async fn settings(state: &AppState, aws: &Aws, team: &Team) -> Result<Value, ApiError> {
    let external_id = state
        .store()
        .ensure_aws_external_id(team.id, &generate_external_id())
        .await?;
    let integration = state.store().aws_integration(team.id).await?;
    let (our_account_id, role_name) = aws.account_and_role();
    Ok(json!({
        "our_account_id": our_account_id,
        "role_name": role_name,
        "principal_arn": aws.principal_arn(),
        "external_id": external_id,
        "account_id": integration.account_id,
        "role_arn": integration.account_id.as_deref().map(|account| aws.role_arn(account)),
        "delegated_access_active": integration.linked_at.is_some(),
        "linked_at": integration.linked_at,
        "bucket_owner_account_ids": integration.bucket_owners,
        "trust_policy": aws.trust_policy(&external_id),
        "permission_policy": permission_policy(BUCKET_PLACEHOLDER),
    }))
}

fn parse_link(body: &[u8]) -> Result<(String, Vec<String>), ApiError> {
    let object = object(body, &["account_id", "bucket_owner_account_ids"])?;
    let account_id = required_string(
        object.get("account_id"),
        "account_id",
        "your 12-digit AWS account ID as a string, such as \"012345678901\"",
    )?;
    validate_account_id(account_id)
        .map_err(|message| ApiError::field("invalid_request", "account_id", message))?;
    let owners = match object.get("bucket_owner_account_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let field = format!("bucket_owner_account_ids[{index}]");
                let text = item.as_str().ok_or_else(|| {
                    ApiError::field(
                        "invalid_request",
                        field.clone(),
                        "each bucket owner must be a 12-digit account ID string",
                    )
                })?;
                validate_account_id(text)
                    .map_err(|message| ApiError::field("invalid_request", field, message))?;
                Ok(text.to_owned())
            })
            .collect::<Result<_, ApiError>>()?,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_request",
                "bucket_owner_account_ids",
                "bucket_owner_account_ids must be a list of 12-digit account IDs",
            ));
        }
    };
    Ok((account_id.to_owned(), owners))
}

fn parse_verify(body: &[u8]) -> Result<(String, String), ApiError> {
    let object = object(body, &["uri"])?;
    let uri = required_string(
        object.get("uri"),
        "uri",
        "an s3://bucket/key URI as a string",
    )?;
    match AttachmentRef::parse(uri) {
        Ok(AttachmentRef::S3 { bucket, key, .. }) => Ok((bucket, key)),
        Ok(other) => Err(ApiError::field(
            "invalid_uri",
            "uri",
            format!(
                "this checks S3 access, but the URI is {} URI: give an s3://bucket/key URI",
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
    fn account_id_number_is_not_missing() {
        let error = parse_link(br#"{"account_id": 123456789012}"#).unwrap_err();
        assert_eq!(error.code, "invalid_request");
        assert_eq!(error.field.as_deref(), Some("account_id"));
        assert!(
            error
                .message
                .starts_with("account_id must be a string, not a number"),
            "{}",
            error.message
        );
        let error = parse_link(b"{}").unwrap_err();
        assert!(
            error.message.starts_with("account_id is required"),
            "{}",
            error.message
        );
    }

    #[test]
    fn unreachable_sts_hides_transport_detail() {
        let detail = "dispatch failure: https://sts.us-east-1.amazonaws.com/";
        let error = link_error(LinkError::Unavailable(detail.to_owned()), TeamId::new());
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "aws_link_failed");
        assert!(!error.message.contains("amazonaws"), "{}", error.message);
    }
}
