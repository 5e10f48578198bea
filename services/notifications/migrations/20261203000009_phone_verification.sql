-- A phone number is used for texts only once its owner typed back the code sent to it: a
-- number set in the preferences waits in `phone_pending` until then (SMS pumping: nobody
-- makes the shop text numbers they do not hold). Codes are kept hashed, expire, allow a few
-- tries, and are sent at a bounded rate per person and per number.
ALTER TABLE preferences
    ADD COLUMN phone_pending text
        CONSTRAINT preferences_phone_pending_e164 CHECK (phone_pending ~ '^\+[1-9][0-9]{6,14}$');

CREATE TABLE phone_verifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    phone       text NOT NULL,
    code_hash   bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    verified_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX phone_verifications_by_user ON phone_verifications (user_id, created_at DESC);
CREATE INDEX phone_verifications_by_phone ON phone_verifications (phone, created_at DESC);
