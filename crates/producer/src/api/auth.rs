//! Bearer API key authentication.
//!
//! The key is hashed and looked up by its hash. The key is never logged,
//! and a failed lookup tells the client only that the key is not valid. A
//! valid key's team is cached for [`KEY_CACHE_TTL`], so a team's requests do
//! not each query the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        let hash = hash_api_key(key);
        if let Some(team) = state.key_cache().get(&hash) {
            return Ok(Caller(team));
        }
        match state.store().team_by_api_key_hash(&hash).await? {
            Some(team) => {
                state.key_cache().insert(hash, team.clone());
                Ok(Caller(team))
            }
            None => Err(unauthorized(
                "the API key is not valid: check it, or ask an operator for a new one",
            )),
        }
    }
}

/// How long a valid API key's team is remembered. A key that stops being
/// valid, such as a deleted team's, still works this long on each producer.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Keys remembered at most. Only valid keys are kept, one per team, so only
/// this many active teams fill the cache. A full cache starts over.
const KEY_CACHE_ENTRIES: usize = 10_000;

/// The teams of valid API keys, by the key's hash, with the time each was
/// read from the database.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], (Team, Instant)>>,
}

impl KeyCache {
    /// Returns the team of `hash` when it was read within [`KEY_CACHE_TTL`].
    fn get(&self, hash: &[u8; 32]) -> Option<Team> {
        let entries = self.lock();
        let (team, read_at) = entries.get(hash)?;
        (read_at.elapsed() < KEY_CACHE_TTL).then(|| team.clone())
    }

    fn insert(&self, hash: [u8; 32], team: Team) {
        self.insert_read_at(hash, team, Instant::now());
    }

    fn insert_read_at(&self, hash: [u8; 32], team: Team, read_at: Instant) {
        let mut entries = self.lock();
        if entries.len() >= KEY_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (team, read_at));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Team, Instant)>> {
        self.entries
            .lock()
            .expect("no thread panics while it has the key cache locked")
    }
}

#[cfg(test)]
mod tests {
    use attache_domain::TeamId;

    use super::*;

    fn team() -> Team {
        Team {
            id: TeamId(uuid::Uuid::new_v4()),
            name: "cached".to_owned(),
        }
    }

    #[test]
    fn key_cache_returns_fresh_team() {
        let cache = KeyCache::default();
        let team = team();
        assert_eq!(cache.get(&[1; 32]), None);
        cache.insert([1; 32], team.clone());
        assert_eq!(cache.get(&[1; 32]), Some(team));
        assert_eq!(cache.get(&[2; 32]), None);
    }

    #[test]
    fn key_cache_forgets_after_ttl() {
        let cache = KeyCache::default();
        let read_at = Instant::now()
            .checked_sub(KEY_CACHE_TTL + Duration::from_secs(1))
            .expect("the machine has been up longer than the cache lifetime");
        cache.insert_read_at([1; 32], team(), read_at);
        assert_eq!(cache.get(&[1; 32]), None);
    }
}
