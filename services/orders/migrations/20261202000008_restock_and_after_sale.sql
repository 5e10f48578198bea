-- A cancelled order's sold stock is put back (`restock`, re-sent until answered like the
-- other compensations). After the sale: the payment is captured at shipping; refunds (a
-- cancellation after shipping, returns) are sent and re-sent until payments answers. The
-- projection shows what was captured and refunded.

ALTER TABLE sagas ADD COLUMN restock_pending boolean NOT NULL DEFAULT false;

CREATE TABLE payment_actions (
    -- A refund's `refund_id`; a capture's own id.
    id              uuid PRIMARY KEY,
    order_id        uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('capture', 'refund')),
    amount          bigint NOT NULL CHECK (amount > 0),
    reason          text NOT NULL,
    -- The return a refund pays back, if any.
    return_id       uuid,
    status          text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- When a pending action is sent again.
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- One capture per order.
CREATE UNIQUE INDEX payment_actions_one_capture ON payment_actions (order_id)
    WHERE kind = 'capture';
CREATE INDEX payment_actions_by_order ON payment_actions (order_id);
CREATE INDEX payment_actions_due ON payment_actions (next_attempt_at) WHERE status = 'pending';

ALTER TABLE orders
    ADD COLUMN captured bigint NOT NULL DEFAULT 0 CHECK (captured >= 0),
    ADD COLUMN refunded bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0);
