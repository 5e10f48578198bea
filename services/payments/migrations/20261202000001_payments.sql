-- Payments, the attempts made on them (each provider call, whatever its outcome), and refunds.
-- Amounts are integer minor units of the payment's currency.

CREATE TABLE payments (
    id                   uuid PRIMARY KEY,
    order_id             uuid NOT NULL,
    customer_id          uuid,
    email                text NOT NULL,
    provider             text NOT NULL,
    -- The provider's id of the authorization (a PaymentIntent id); null until it answered.
    provider_reference   text,
    -- A provider token (pm_card_visa); card numbers are refused before anything is stored.
    payment_method       text NOT NULL,
    currency             text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount               bigint NOT NULL CHECK (amount > 0),
    captured             bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    -- The last line of defence of the refund bound; the code checks first under a row lock.
    refunded             bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= captured),
    status               text NOT NULL CHECK (status IN ('pending', 'requires_action', 'authorized',
                             'partially_captured', 'captured', 'partially_refunded', 'refunded',
                             'voided', 'declined', 'failed')),
    decline_code         text,
    decline_message      text,
    -- The last failure (provider unavailable or refused), for admins.
    failure              text,
    -- 3-D Secure: the secret in the action URL and when an unanswered challenge lapses.
    challenge_token      text,
    challenge_expires_at timestamptz,
    -- The authorize command's envelope, so later events (a completed challenge) carry the
    -- saga's correlation.
    correlation_id       uuid NOT NULL,
    authorize_command_id uuid NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_by_order ON payments (order_id, id);

CREATE TABLE payment_attempts (
    id                 uuid PRIMARY KEY,
    payment_id         uuid NOT NULL REFERENCES payments (id),
    operation          text NOT NULL CHECK (operation IN ('authorize', 'challenge', 'capture', 'void', 'refund')),
    amount             bigint CHECK (amount > 0),
    idempotency_key    text NOT NULL,
    outcome            text NOT NULL CHECK (outcome IN ('succeeded', 'requires_action', 'declined', 'failed')),
    code               text,
    detail             text,
    provider_reference text,
    -- The envelope of the command that caused it (null for the challenge endpoint).
    command_id         uuid,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_attempts_by_payment ON payment_attempts (payment_id, id);

CREATE TABLE refunds (
    id                 uuid PRIMARY KEY,
    payment_id         uuid NOT NULL REFERENCES payments (id),
    amount             bigint NOT NULL CHECK (amount > 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reason             text NOT NULL,
    -- Refused refunds are kept so a repeated command gets the same answer.
    status             text NOT NULL CHECK (status IN ('succeeded', 'refused')),
    -- Everything refunded of the payment after this refund (the reply's refunded_total).
    refunded_total     bigint NOT NULL CHECK (refunded_total >= 0),
    failure            text,
    provider_reference text,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_by_payment ON refunds (payment_id, id);
