-- Orders: the order event log (the source of truth), the orders and lines projections
-- (updated in the same transaction as each appended event), and the checkout saga's state.

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    customer_id      uuid NOT NULL,
    -- The Idempotency-Key the order was placed with: a checkout that runs twice (the key's
    -- record was lost between commit and answer) finds the first order instead of a second.
    checkout_key     text NOT NULL,
    email            text NOT NULL,
    shipping_address jsonb NOT NULL,
    payment_method   text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'reserved',
                         'awaiting_payment_action', 'authorized', 'confirmed', 'shipped',
                         'delivered', 'cancelled', 'refunded')),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal         bigint NOT NULL CHECK (subtotal >= 0),
    total            bigint NOT NULL CHECK (total >= 0),
    cancel_reason    text,
    cancel_detail    text,
    -- The sequence number of the last log entry applied.
    version          integer NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_checkout_key UNIQUE (customer_id, checkout_key)
);
-- "My orders", newest first (ids are UUIDv7: they sort by time).
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);

CREATE TABLE order_lines (
    order_id    uuid NOT NULL REFERENCES orders (id),
    line_no     integer NOT NULL,
    product_id  uuid NOT NULL,
    sku         text NOT NULL,
    name        text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  bigint NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Append-only: entries are never updated or deleted.
CREATE TABLE order_events (
    order_id    uuid NOT NULL REFERENCES orders (id),
    seq         integer NOT NULL CHECK (seq > 0),
    kind        text NOT NULL,
    data        jsonb NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, seq)
);

CREATE FUNCTION order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END $$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

CREATE TABLE sagas (
    order_id       uuid PRIMARY KEY REFERENCES orders (id),
    step           text NOT NULL CHECK (step IN ('reserving', 'authorizing', 'completed',
                       'compensated')),
    -- When the current step gives up; null once nothing is awaited.
    deadline       timestamptz,
    reservation_id uuid NOT NULL UNIQUE,
    payment_id     uuid NOT NULL UNIQUE,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_due ON sagas (deadline) WHERE step IN ('reserving', 'authorizing');
