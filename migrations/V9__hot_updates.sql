-- Every fetch attempt updates its attachment row, and every delivery its
-- callback row. PostgreSQL can update a row in place (a HOT update, with no
-- new index entries) only when no index covers a changed column, its
-- predicate included, and the page has room for the new version. Neither
-- held: the last benchmark's 75,000 attachment updates were all non-HOT,
-- each adding entries to both unique indexes.
--
-- Replay is the only reader of these two indexes, and it is rare. Without
-- them, a replay scoped to a task or team finds rows through the task
-- indexes, skipping succeeded tasks, and an operator's replay across all
-- teams scans the table.

-- Dropping an index locks its table. Fail the migration, and so the
-- binary's start, rather than queue every write behind a long transaction.
SET LOCAL lock_timeout = '5s';

DROP INDEX attachments_failed_completed;
DROP INDEX callbacks_status_created;

-- Room on each page for the updated versions of its rows. Pages written
-- from now on keep it; existing pages fill it as rows move.
ALTER TABLE attachments SET (fillfactor = 50);
ALTER TABLE callbacks SET (fillfactor = 50);
ALTER TABLE tasks SET (fillfactor = 70);
