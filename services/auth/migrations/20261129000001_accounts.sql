-- Accounts, signing keys, sessions and refresh tokens.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Lower-cased; unique.
    email         text NOT NULL UNIQUE,
    name          text NOT NULL,
    -- Argon2id PHC string; NULL for accounts that only sign in through OIDC.
    password_hash text,
    roles         text[] NOT NULL DEFAULT ARRAY['customer'],
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 signing keys, private halves encrypted with AUTH_KEY_ENCRYPTION_KEY (AES-256-GCM),
-- so every replica signs with the same keys and a database dump alone cannot mint tokens.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    algorithm       text NOT NULL CHECK (algorithm = 'EdDSA'),
    private_key     bytea NOT NULL,
    nonce           bytea NOT NULL,
    public_key      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- After this the key no longer signs; it stays in the JWKS until every token it signed expired.
    signs_until     timestamptz NOT NULL,
    published_until timestamptz NOT NULL
);

-- A session is a refresh-token family: one login on one device.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    user_agent   text,
    ip           text,
    revoked_at   timestamptz,
    revoke_reason text
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens: opaque, stored as SHA-256, single use. Presenting a used one revokes its session.
CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
