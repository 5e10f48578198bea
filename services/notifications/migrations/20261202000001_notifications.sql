-- Secrets this service signs with, created once per database so every replica (and every
-- restart) signs and verifies the same way without a flag to set.
CREATE TABLE signing_keys (
    name   text PRIMARY KEY,
    secret bytea NOT NULL
);
INSERT INTO signing_keys (name, secret)
VALUES ('unsubscribe',
        decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))
ON CONFLICT DO NOTHING;

-- Where to write about an order: remembered from order events, because payment events name
-- only the order.
CREATE TABLE order_contacts (
    order_id    uuid PRIMARY KEY,
    customer_id uuid,
    email       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per message to one recipient on one channel, written in the consumer's transaction
-- (with the inbox row) and sent after commit by the delivery worker.
CREATE TABLE deliveries (
    id               uuid PRIMARY KEY,
    -- The event that caused it: one delivery per (event, recipient, channel), however often
    -- the event is redelivered or republished.
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    -- The template family (welcome, order_shipped, ...).
    kind             text NOT NULL,
    category         text NOT NULL,
    critical         boolean NOT NULL,
    channel          text NOT NULL,
    recipient        text NOT NULL,
    user_id          uuid,
    locale           text NOT NULL,
    template_version integer NOT NULL,
    subject          text NOT NULL,
    body_text        text NOT NULL,
    body_html        text NOT NULL,
    -- The one-click unsubscribe link (non-critical messages only).
    unsubscribe_url  text,
    -- Bodies that grant access (a password reset link) are blanked once sent.
    sensitive        boolean NOT NULL DEFAULT false,
    -- queued → sent | failed; suppressed when the recipient opted out of the category.
    status           text NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0,
    -- When the worker may (re)try; while an attempt runs, the end of its lease.
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    -- What the channel answered: the SMTP server's reply or the .eml file's path.
    provider_ref     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    CONSTRAINT deliveries_once UNIQUE (event_id, recipient, channel)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'queued';
CREATE INDEX deliveries_user ON deliveries (user_id, created_at) WHERE user_id IS NOT NULL;

-- A signed-in user's settings.
CREATE TABLE preferences (
    user_id    uuid PRIMARY KEY,
    locale     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Categories someone does not want: `user:<uuid>` (preferences, or a link in a mail to a
-- user) or `email:<address>` (a link in a mail to a guest).
CREATE TABLE opt_outs (
    subject    text NOT NULL,
    category   text NOT NULL,
    -- `preferences` or `link`.
    source     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, category)
);
