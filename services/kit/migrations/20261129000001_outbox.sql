-- The transactional outbox: events are written here in the same transaction as the change they
-- describe, and the relay publishes them to JetStream (Nats-Msg-Id = id) after commit.
CREATE TABLE tienda_outbox (
    -- The envelope id (UUIDv7) and JetStream de-duplication id.
    id              uuid PRIMARY KEY,
    -- Write order; the relay publishes the rows of one aggregate in this order.
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    aggregate_id    text NOT NULL,
    subject         text NOT NULL,
    message_type    text NOT NULL,
    -- The whole envelope as JSON: what is published.
    payload         jsonb NOT NULL,
    -- NATS headers to publish with (traceparent, Tienda-*).
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);

-- Claiming: pending rows in write order, and "is there an earlier pending row of this aggregate".
CREATE INDEX tienda_outbox_pending ON tienda_outbox (seq) WHERE published_at IS NULL;
CREATE INDEX tienda_outbox_pending_aggregate ON tienda_outbox (aggregate_id, seq) WHERE published_at IS NULL;
-- Pruning published rows after the retention period.
CREATE INDEX tienda_outbox_published ON tienda_outbox (published_at) WHERE published_at IS NOT NULL;
