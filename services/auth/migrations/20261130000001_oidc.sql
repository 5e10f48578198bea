-- OpenID Connect sign-in.

-- A started sign-in: single use, short-lived. Keyed by the SHA-256 of its `state`.
CREATE TABLE oidc_flows (
    state_hash    bytea PRIMARY KEY,
    provider      text NOT NULL,
    nonce         text NOT NULL,
    pkce_verifier text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_flows_expiry ON oidc_flows (expires_at);

-- An identity at a provider, keyed as OIDC says an identity is: issuer and subject.
CREATE TABLE user_identities (
    issuer        text NOT NULL,
    subject       text NOT NULL,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The email the provider gave when the identity was linked (for support; not a key).
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
