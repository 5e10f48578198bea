-- Failed sign-ins as a sliding window: per key (an account from one client, or one client
-- across accounts) a count of failures that halves every 15 minutes, and when it was last
-- counted. Replaces login_failures, whose counts never decayed and whose per-client key was
-- the peer address, which behind the gateway is always the gateway.
DROP TABLE login_failures;

CREATE TABLE sign_in_failures (
    key     text PRIMARY KEY,
    score   double precision NOT NULL,
    last_at timestamptz NOT NULL
);
CREATE INDEX sign_in_failures_last_at ON sign_in_failures (last_at);
