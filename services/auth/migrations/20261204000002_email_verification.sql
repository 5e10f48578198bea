-- Email verification: an address is verified by a link sent to it, by a verified OIDC identity,
-- by a completed password reset (the link reached the mailbox) or by configuration (the first
-- admin). OIDC identities link only to verified accounts.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- Single use, stored hashed; bound to the address they were sent to.
CREATE TABLE email_verifications (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX email_verifications_user ON email_verifications (user_id) WHERE used_at IS NULL;
