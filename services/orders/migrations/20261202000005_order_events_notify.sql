-- Open timelines (server-sent events) learn of a new log entry at once: every append
-- notifies `order_events` with the order's id, delivered when the transaction commits.

CREATE FUNCTION order_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('order_events', NEW.order_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER order_events_notify AFTER INSERT ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_notify();
