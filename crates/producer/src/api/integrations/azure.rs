//! `/v1/integrations/azure`: a team's Blob Storage access through our
//! service principal in the team's tenant.
//!
//! POST `/connect` stores a single-use consent `state` for the team and
//! returns the admin-consent URL. Microsoft sends the administrator's
//! browser back to GET `/consent`, which carries no API key, so the `state`
//! alone names the team. The state is consumed before anything else, and
//! the tenant is recorded only for that team once a token request in the
//! tenant succeeds. GET shows the link, DELETE removes it so blobs are read
//! anonymously again, and POST `/verify` runs a fetch's access path for one
//! blob URL without storing anything.

use std::sync::Arc;

use attache_azure::consent::{
    READER_ROLE, STATE_TTL, consent_url, generate_state, hash_state, valid_tenant,
};
use attache_azure::storage::{Reader, classify_status, error_detail};
use attache_azure::{AccessToken, Azure, TokenError};
use attache_domain::AttachmentRef;
use attache_store::integrations::ConsentState;
use attache_store::teams::Team;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Value, json};

use super::object;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::body::{JsonBody, required_string};
use crate::api::error::ApiError;

/// The note on removing our application from the customer's tenant.
const REMOVE_APP_HINT: &str = "Attaché no longer uses its application for your team, but the application stays in your tenant until you delete it: in the Azure portal, open Microsoft Entra ID, Enterprise applications, select Attaché's application and choose Delete";

fn azure(state: &AppState) -> Result<&Arc<Azure>, ApiError> {
    state.azure().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "integration_not_configured",
            "this deployment has no Azure application configured, so Azure blob attachments and Azure settings are unavailable: ask the operator to set ATTACHE_AZURE_CLIENT_ID and ATTACHE_AZURE_CLIENT_SECRET",
        )
    })
}

pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let azure = azure(&state)?;
    Ok(Json(settings(&state, azure, &team).await?))
}

pub async fn connect(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let azure = azure(&state)?;
    let consent_state = generate_state();
    let Some(url) = consent_url(azure.args(), &consent_state) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "integration_not_configured",
            "this deployment has no Azure consent redirect configured: ask the operator to set ATTACHE_AZURE_REDIRECT_URL",
        ));
    };
    let expires_at = state
        .store()
        .create_azure_consent_state(team.id, &hash_state(&consent_state), STATE_TTL)
        .await?;
    tracing::info!(team_id = %team.id, "Azure admin consent requested");
    Ok(Json(json!({
        "consent_url": url.as_str(),
        "expires_at": expires_at,
        "next_step": format!(
            "open consent_url as an administrator of your Azure tenant before expires_at and accept; then assign Attaché's application ({}) the role {READER_ROLE} on the storage accounts or containers to read",
            azure.args().client_id()
        ),
    })))
}

/// The query Microsoft sends to the consent redirect.
#[derive(Deserialize)]
pub struct ConsentRedirect {
    tenant: Option<String>,
    admin_consent: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn consent(
    State(state): State<AppState>,
    Query(redirect): Query<ConsentRedirect>,
) -> Result<Json<Value>, ApiError> {
    let azure = azure(&state)?;
    let start_again = "start again with POST /v1/integrations/azure/connect and open the new consent_url within 30 minutes";
    let Some(consent_state) = redirect.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err(consent_error(
            "consent_state_invalid",
            format!("the consent redirect carries no state: {start_again}"),
        ));
    };
    // The state is consumed first, so even a refused consent uses it up.
    let team_id = match state
        .store()
        .consume_azure_consent_state(&hash_state(consent_state))
        .await?
    {
        ConsentState::Valid(team_id) => team_id,
        ConsentState::Expired => {
            return Err(consent_error(
                "consent_state_expired",
                format!("this consent link expired: {start_again}"),
            ));
        }
        ConsentState::Used => {
            return Err(consent_error(
                "consent_state_used",
                format!("this consent link was already used: {start_again}"),
            ));
        }
        ConsentState::Unknown => {
            return Err(consent_error(
                "consent_state_invalid",
                format!("this consent link was not issued by Attaché: {start_again}"),
            ));
        }
    };

    if let Some(error) = &redirect.error {
        let description = redirect
            .error_description
            .as_deref()
            .unwrap_or("no description");
        tracing::warn!(%team_id, error, "Azure admin consent was not granted");
        return Err(consent_error(
            "azure_consent_refused",
            format!(
                "Microsoft reported that consent was not granted ({error}: {description}): ask an administrator of your tenant (Global Administrator, Application Administrator or Cloud Application Administrator) to {start_again}"
            ),
        ));
    }
    if !redirect
        .admin_consent
        .as_deref()
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    {
        return Err(consent_error(
            "azure_consent_refused",
            format!(
                "admin consent was not granted: ask an administrator of your tenant to {start_again}"
            ),
        ));
    }
    let tenant = redirect.tenant.as_deref().unwrap_or_default();
    if !valid_tenant(tenant) {
        return Err(consent_error(
            "consent_tenant_invalid",
            format!("the consent redirect names no valid tenant (`{tenant}`): {start_again}"),
        ));
    }

    check_tenant(azure, tenant).await?;
    state.store().link_azure(team_id, tenant).await?;
    tracing::info!(%team_id, tenant, "Azure linked");
    Ok(Json(json!({
        "linked": true,
        "tenant": tenant,
        "next_step": format!(
            "assign Attaché's application ({}) the role {READER_ROLE} on the storage accounts or containers to read; blob URLs of your team are now read only with this tenant's token, never anonymously",
            azure.args().client_id()
        ),
    })))
}

/// Requests a token in `tenant`, uncached, to check the consent before the
/// tenant is recorded.
async fn check_tenant(azure: &Azure, tenant: &str) -> Result<(), ApiError> {
    match azure.request_token(tenant).await {
        Ok(_) => Ok(()),
        Err(TokenError::Denied(detail)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "azure_consent_missing",
            format!(
                "{detail}: consent can take a few minutes to reach every Microsoft server; wait, then start again with POST /v1/integrations/azure/connect"
            ),
        )),
        Err(other) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "azure_unavailable",
            format!(
                "the tenant's consent could not be checked ({other}): start again with POST /v1/integrations/azure/connect in a few minutes"
            ),
        )),
    }
}

fn consent_error(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

pub async fn unlink(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let azure = azure(&state)?;
    state.store().unlink_azure(team.id).await?;
    tracing::info!(team_id = %team.id, "Azure unlinked");
    let mut body = settings(&state, azure, &team).await?;
    body["note"] = Value::String(REMOVE_APP_HINT.to_owned());
    Ok(Json(body))
}

pub async fn verify(
    State(state): State<AppState>,
    Caller(team): Caller,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let azure = azure(&state)?;
    let (uri, account, container, blob) = parse_verify(&body)?;
    let integration = state.store().azure_integration(team.id).await?;
    let tenant = match (&integration.linked_at, &integration.tenant) {
        (Some(_), Some(tenant)) => Some(tenant.as_str()),
        _ => None,
    };
    let access_path = if tenant.is_some() {
        "service_principal"
    } else {
        "anonymous"
    };
    let mut steps = Vec::new();
    let client_id = azure.args().client_id();

    let (token, reader): (Option<AccessToken>, Reader<'_>) = match tenant {
        Some(tenant) => match azure.tenant_token(tenant).await {
            Ok(token) => {
                steps.push(json!({"step": "tenant_token", "ok": true, "detail": format!("obtained a token in tenant {tenant}")}));
                (Some(token), Reader::Tenant { tenant, client_id })
            }
            Err(error) => {
                let fix = match &error {
                    TokenError::Denied(_) => "an administrator of your tenant must grant admin consent again: POST /v1/integrations/azure/connect".to_owned(),
                    _ => "try again in a minute".to_owned(),
                };
                steps.push(json!({"step": "tenant_token", "ok": false, "detail": error.to_string(), "fix": fix}));
                return Ok(Json(
                    json!({"uri": uri, "access_path": access_path, "ok": false, "steps": steps}),
                ));
            }
        },
        None => {
            steps.push(json!({"step": "tenant_token", "ok": true, "detail": "not needed: without an Azure link, the blob is read anonymously, which works for public containers only"}));
            (None, Reader::Anonymous)
        }
    };

    let sent = match azure
        .get_blob(token.as_ref(), &account, &container, &blob)
        .await
    {
        Ok(sent) => sent,
        Err(message) => return Err(ApiError::internal(message)),
    };
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
            steps.push(json!({"step": "get_blob", "ok": true, "detail": detail}));
            true
        }
        Ok(response) => {
            let status = response.status().as_u16();
            let detail = error_detail(response).await;
            let (code, message) = classify_status(status, reader, &account, &container, &detail);
            steps.push(
                json!({"step": "get_blob", "ok": false, "code": code.as_str(), "detail": message}),
            );
            false
        }
        Err(error) => {
            steps.push(json!({"step": "get_blob", "ok": false, "detail": format!("the request was not answered ({error}); try again in a minute")}));
            false
        }
    };
    Ok(Json(
        json!({"uri": uri, "access_path": access_path, "ok": ok, "egress_member": sent.member, "steps": steps}),
    ))
}

/// The team's link as GET and DELETE return it.
async fn settings(state: &AppState, azure: &Azure, team: &Team) -> Result<Value, ApiError> {
    let integration = state.store().azure_integration(team.id).await?;
    Ok(json!({
        "linked": integration.linked_at.is_some(),
        "tenant": integration.tenant,
        "linked_at": integration.linked_at,
        "client_id": azure.args().client_id(),
        "role": READER_ROLE,
    }))
}

fn parse_verify(body: &[u8]) -> Result<(String, String, String, String), ApiError> {
    let object = object(body, &["uri"])?;
    let uri = required_string(
        object.get("uri"),
        "uri",
        "an https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB URL as a string",
    )?;
    match AttachmentRef::parse(uri) {
        Ok(AttachmentRef::AzureBlob {
            account,
            container,
            blob,
        }) => Ok((uri.to_owned(), account, container, blob)),
        Ok(other) => Err(ApiError::field(
            "invalid_uri",
            "uri",
            format!(
                "this checks Azure Blob Storage access, but the URI is {} URI: give an https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB URL",
                other.provider().name_with_article()
            ),
        )),
        Err(error) => Err(ApiError::field("invalid_uri", "uri", error.message())),
    }
}
