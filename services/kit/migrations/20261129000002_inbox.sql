-- The inbox: one row per message a consumer has applied, written in the same transaction as the
-- handler's work, so a redelivered message is recognised and skipped.
CREATE TABLE tienda_inbox (
    consumer     text NOT NULL,
    message_id   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX tienda_inbox_processed_at ON tienda_inbox (processed_at);
