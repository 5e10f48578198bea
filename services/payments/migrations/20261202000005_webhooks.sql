-- Provider webhooks, stored once by the provider's event id before the 200 is sent, and
-- processed afterwards (reconciled with the provider's current state).
CREATE TABLE webhook_events (
    provider        text NOT NULL,
    event_id        text NOT NULL,
    type            text NOT NULL,
    -- The PaymentIntent the event concerns (null: none; the event is noted and skipped).
    intent          text,
    payload         jsonb NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    processed_at    timestamptz,
    outcome         text,
    PRIMARY KEY (provider, event_id)
);

CREATE INDEX webhook_events_due ON webhook_events (received_at) WHERE processed_at IS NULL;

-- Webhooks find the payment by the provider's id of its authorization.
CREATE INDEX payments_by_provider_reference ON payments (provider, provider_reference)
    WHERE provider_reference IS NOT NULL;
