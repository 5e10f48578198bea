-- Delivery tracking. After `sent`, the provider's callback may say `delivered` or `bounced`
-- (a complaint is recorded on a delivered message). `failed` is the dead letter: the last
-- attempt failed, or a permanent error; an admin replays it. Every change of status is kept
-- in `delivery_events`, newest last.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('queued', 'sent', 'delivered', 'bounced', 'failed', 'suppressed'));
ALTER TABLE deliveries
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Why a delivery was suppressed (`opted_out`, `hard_bounce`, `complaint`).
    ADD COLUMN status_reason text;
UPDATE deliveries SET status_reason = 'opted_out' WHERE status = 'suppressed';

CREATE TABLE delivery_events (
    id          bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES deliveries (id),
    status      text NOT NULL,
    detail      text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_events_by_delivery ON delivery_events (delivery_id, id);

-- Addresses no message goes to on a channel: a hard bounce or a complaint put them here (an
-- admin can lift it). Recipients are kept lower-cased.
CREATE TABLE suppressions (
    channel     text NOT NULL,
    recipient   text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint')),
    delivery_id uuid,
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, recipient)
);

-- Provider callbacks, once each by their id (a redelivered callback does nothing).
CREATE TABLE callback_events (
    channel     text NOT NULL,
    event_id    text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, event_id)
);

CREATE INDEX deliveries_by_recipient ON deliveries (lower(recipient), created_at DESC);
CREATE INDEX deliveries_by_time ON deliveries (created_at DESC, id DESC);
