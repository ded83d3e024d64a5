-- A team's Azure link: the tenant whose administrator granted admin consent
-- to Attaché's application. Tokens for the team's blobs are requested only
-- for this tenant, and only while azure_linked_at is set.
ALTER TABLE teams ADD COLUMN azure_tenant text;
ALTER TABLE teams ADD COLUMN azure_linked_at timestamptz;

-- Pending admin consents. The consent redirect presents `state`, which
-- names the team; only its SHA-256 is stored. A state is used at most once
-- (used_at) and only before expires_at.
CREATE TABLE azure_consent_states (
    state_hash bytea PRIMARY KEY,
    team_id uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX azure_consent_states_expires_at ON azure_consent_states (expires_at);
