-- Carts: one per signed-in customer, or a guest's (found by the SHA-256 of its token, which
-- is never stored). Lines keep the price the customer saw, so a change before checkout is
-- reported and confirmed, never applied silently. `version` moves on every change: a
-- checkout places the lines it priced only if the cart has not changed since.

CREATE TABLE carts (
    id          uuid PRIMARY KEY,
    customer_id uuid UNIQUE,
    token_hash  bytea UNIQUE,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_id IS NULL) <> (token_hash IS NULL))
);
-- Guest carts untouched for a while are swept.
CREATE INDEX carts_guest_idle ON carts (updated_at) WHERE customer_id IS NULL;

CREATE TABLE cart_lines (
    cart_id       uuid NOT NULL REFERENCES carts (id) ON DELETE CASCADE,
    sku           text NOT NULL,
    product_id    uuid NOT NULL,
    name          text NOT NULL,
    quantity      integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    -- The unit price the customer last saw for this line.
    seen_amount   bigint NOT NULL CHECK (seen_amount >= 0),
    seen_currency text NOT NULL CHECK (seen_currency ~ '^[A-Z]{3}$'),
    added_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cart_id, sku)
);
