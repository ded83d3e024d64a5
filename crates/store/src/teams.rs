//! Teams and their API keys. A key is stored only as its SHA-256, so a
//! database dump does not hand out access.

use attache_domain::TeamId;

use crate::{Result, Store};

/// A team as authenticated by its API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
}

/// The columns of a new team row. The caller generates the key and secret.
pub struct NewTeam<'a> {
    pub id: TeamId,
    pub name: &'a str,
    pub api_key_hash: &'a [u8],
    pub api_key_prefix: &'a str,
    pub signing_secret: &'a str,
}

impl Store {
    /// Inserts a team.
    pub async fn create_team(&self, team: NewTeam<'_>) -> Result<()> {
        let client = self.pool.get().await?;
        crate::cached::execute(
            &client,
            "INSERT INTO teams (id, name, api_key_hash, api_key_prefix, signing_secret)
                 VALUES ($1, $2, $3, $4, $5)",
            &[
                &team.id.0,
                &team.name,
                &team.api_key_hash,
                &team.api_key_prefix,
                &team.signing_secret,
            ],
        )
        .await?;
        Ok(())
    }

    /// Finds the team whose API key hashes to `api_key_hash`.
    pub async fn team_by_api_key_hash(&self, api_key_hash: &[u8]) -> Result<Option<Team>> {
        let client = self.pool.get().await?;
        let row = crate::cached::query_opt(
            &client,
            "SELECT id, name FROM teams WHERE api_key_hash = $1",
            &[&api_key_hash],
        )
        .await?;
        Ok(row.map(|row| Team {
            id: TeamId(row.get("id")),
            name: row.get("name"),
        }))
    }
}
