-- Replay: failed attachments and dead callbacks can be queued again.

-- A replayed attachment that completes its task again produces a new
-- callback with a new webhook id, because its content differs; the old
-- callback row stays for audit.
ALTER TABLE callbacks DROP CONSTRAINT callbacks_task_id_key;
CREATE INDEX callbacks_task ON callbacks (task_id);

-- Start of the current retry window: the age limit of the retry policy
-- counts from here, and a replay starts a new window.
ALTER TABLE attachments ADD COLUMN retry_window_start timestamptz NOT NULL DEFAULT now();
ALTER TABLE callbacks ADD COLUMN retry_window_start timestamptz NOT NULL DEFAULT now();
UPDATE attachments SET retry_window_start = created_at;
UPDATE callbacks SET retry_window_start = created_at;

-- How often an operator or the team replayed a row.
ALTER TABLE attachments ADD COLUMN replays integer NOT NULL DEFAULT 0;
ALTER TABLE callbacks ADD COLUMN replays integer NOT NULL DEFAULT 0;
