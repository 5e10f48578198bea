-- Digests: a person may take a non-critical category's email as one message per hour or per
-- day (their day, in their time zone). Events of that category in a window become items of
-- the window's digest; when the window ends the digest is rendered and queued as one
-- delivery. One digest per (person, category, window); one item per (person, event), so a
-- redelivered event is never listed twice, in this window or the next.
CREATE TABLE digest_settings (
    user_id  uuid NOT NULL,
    category text NOT NULL,
    window_kind text NOT NULL CHECK (window_kind IN ('hourly', 'daily')),
    PRIMARY KEY (user_id, category)
);

CREATE TABLE digests (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    category     text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    -- open: taking items; enqueued: its delivery is written (event_id = this id).
    status       text NOT NULL CHECK (status IN ('open', 'enqueued')),
    recipient    text NOT NULL,
    locale       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT digests_once UNIQUE (user_id, category, window_start)
);
CREATE INDEX digests_due ON digests (window_end) WHERE status = 'open';

CREATE TABLE digest_items (
    digest_id  uuid NOT NULL REFERENCES digests (id),
    user_id    uuid NOT NULL,
    event_id   uuid NOT NULL,
    kind       text NOT NULL,
    line       text NOT NULL,
    link       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT digest_items_once UNIQUE (user_id, event_id)
);
CREATE INDEX digest_items_by_digest ON digest_items (digest_id, created_at);

-- An event's email that went into a digest is recorded as `digested`.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('queued', 'sent', 'delivered', 'bounced', 'failed', 'suppressed', 'digested'));
