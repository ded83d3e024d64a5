-- The index on (status, updated_at) served no query: replay selects failed
-- attachments by completed_at. It cost an entry on every attempt's update,
-- and with statistics from a quiet moment, where few rows are pending, the
-- planner used it to scan every pending attachment for each batch of
-- outcomes during a burst. A partial index of failed attachments by
-- completion time serves replay and is never a path to pending rows.

DROP INDEX attachments_status_updated;

CREATE INDEX attachments_failed_completed ON attachments (completed_at)
    WHERE status = 'failed';
