//! Bearer API key authentication.
//!
//! The key is hashed and looked up by its hash. The key is never logged,
//! and a failed lookup tells the client only that the key is not valid.

use attache_store::teams::Team;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::AppState;
use super::error::ApiError;
use crate::keys::hash_api_key;

/// The team that sent the request.
pub struct Caller(pub Team);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).at("Authorization")
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "send the team's API key in the header `Authorization: Bearer <api key>`",
            ));
        };
        let key = value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must read `Bearer <api key>`"))?;
        match state
            .store()
            .team_by_api_key_hash(&hash_api_key(key))
            .await?
        {
            Some(team) => Ok(Caller(team)),
            None => Err(unauthorized(
                "the API key is not valid: check it, or ask an operator for a new one",
            )),
        }
    }
}
