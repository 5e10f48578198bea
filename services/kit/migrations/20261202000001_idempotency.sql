-- Idempotency keys (IETF draft-ietf-httpapi-idempotency-key-header): one row per (caller, endpoint,
-- key). The row is the in-flight claim while the first request runs (status NULL, locked_until
-- in the future) and then the stored response that retries are answered with.
CREATE TABLE tienda_idempotency (
    -- Who sent it: `user:<sub>` for verified tokens, a scope the service chose, or `anonymous`.
    scope        text NOT NULL,
    -- The endpoint: one key on two endpoints is two records.
    method       text NOT NULL,
    path         text NOT NULL,
    -- The client's Idempotency-Key (1-255 characters).
    key          text NOT NULL,
    -- SHA-256 of method, path and query, and body: a retry must match it.
    fingerprint  bytea NOT NULL,
    -- Which attempt owns the record; renewals, storing and releasing name it, so an owner whose
    -- lease was taken over cannot overwrite its successor.
    claim        uuid NOT NULL,
    -- While running: when the owner's lease ends (renewed while the handler runs). NULL once the
    -- response is stored.
    locked_until timestamptz,
    -- The stored response; NULL while running.
    status       smallint,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (scope, method, path, key)
);

-- The sweeper deletes records past the retention period, oldest first.
CREATE INDEX tienda_idempotency_created_at ON tienda_idempotency (created_at);
