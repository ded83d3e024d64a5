-- The task pipeline: teams, tasks, their attachments and callbacks, and the
-- transactional outbox that the relay publishes to RabbitMQ.

CREATE TABLE teams (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    -- SHA-256 of the API key; the key itself is shown once and never stored.
    api_key_hash    bytea NOT NULL UNIQUE,
    -- The key's first characters, so an operator can tell keys apart.
    api_key_prefix  text NOT NULL,
    -- Standard Webhooks secret, `whsec_` followed by base64.
    signing_secret  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    team_id          uuid NOT NULL REFERENCES teams (id),
    callback_url     text NOT NULL,
    metadata         jsonb NOT NULL DEFAULT '{}',
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'partially_failed', 'failed')),
    idempotency_key  text,
    -- SHA-256 of the canonical request body, to tell a retry from a reuse.
    request_hash     bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    UNIQUE (team_id, idempotency_key)
);

CREATE INDEX tasks_team_created ON tasks (team_id, created_at);

CREATE TABLE attachments (
    id             uuid PRIMARY KEY,
    task_id        uuid NOT NULL REFERENCES tasks (id),
    position       integer NOT NULL,
    uri            text NOT NULL,
    provider       text NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Finished fetch attempts. A job carries the count it was queued at, so
    -- a stale duplicate is recognised and skipped.
    attempts       integer NOT NULL DEFAULT 0,
    error_code     text,
    error_message  text,
    size_bytes     bigint,
    sha256         text,
    content_type   text,
    storage_key    text,
    -- Which egress member carried the last attempt, for audit.
    egress_member  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    UNIQUE (task_id, position)
);

CREATE INDEX attachments_status_updated ON attachments (status, updated_at);

CREATE TABLE callbacks (
    id                uuid PRIMARY KEY,
    task_id           uuid NOT NULL UNIQUE REFERENCES tasks (id),
    url               text NOT NULL,
    -- The exact body sent on every attempt, so retries carry identical bytes.
    payload           text NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    egress_member     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    delivered_at      timestamptz
);

CREATE INDEX callbacks_status_created ON callbacks (status, created_at);

-- One row per delivery attempt, for customers asking what we sent and when.
CREATE TABLE callback_attempts (
    id             bigserial PRIMARY KEY,
    callback_id    uuid NOT NULL REFERENCES callbacks (id),
    attempt        integer NOT NULL,
    status_code    integer,
    error          text,
    duration_ms    integer NOT NULL,
    egress_member  text,
    attempted_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX callback_attempts_callback ON callback_attempts (callback_id);

-- Jobs waiting to be published. A row is deleted only after RabbitMQ
-- confirmed the message. `available_at` in the future holds a scheduled
-- retry, so a delay survives any worker restart.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('fetch', 'callback')),
    payload       jsonb NOT NULL,
    available_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_available ON outbox (available_at, id);

-- Wakes the relay once per inserting statement; the relay also polls, so a
-- lost notification only delays publishing.
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('attache_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
