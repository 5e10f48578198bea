-- Outbound webhooks for shop integrations: endpoints an admin registers with the event types
-- they want. Each event of such a type becomes one delivery per endpoint (channel `webhook`,
-- recipient = the endpoint's id, body_text = the event as JSON), sent signed with the
-- endpoint's secret (Standard Webhooks) and retried like any delivery.
CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    url         text NOT NULL,
    event_types text[] NOT NULL,
    description text,
    -- `whsec_` + base64 of 24 random bytes.
    secret      text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    -- Why it was turned off (an admin, or the receiver answered 410 Gone).
    disabled_reason text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_active ON webhook_endpoints USING gin (event_types) WHERE active;
