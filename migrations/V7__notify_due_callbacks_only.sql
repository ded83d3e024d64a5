-- A transaction that sends NOTIFY takes a database-wide lock at commit, so
-- one notification per accepted task serialised every task insert (seen
-- as `Lock:object` waits on COMMIT under load). The producer now wakes its
-- own relay after accepting a task, and retries are due later anyway, so
-- only callback jobs due now, written by the fetch-worker, still notify.

DROP TRIGGER outbox_notify ON outbox;

CREATE OR REPLACE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM inserted WHERE kind = 'callback' AND available_at <= now()
    ) THEN
        PERFORM pg_notify('attache_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
