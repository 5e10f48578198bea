-- Invoices (issued on capture) and credit notes (on refund). Numbers are gap-free per shop,
-- series and year: each comes from its counter row, incremented in the issuing transaction.
CREATE TABLE invoice_counters (
    shop   text NOT NULL,
    series text NOT NULL CHECK (series IN ('INV', 'CN')),
    year   integer NOT NULL,
    last   integer NOT NULL CHECK (last > 0),
    PRIMARY KEY (shop, series, year)
);

CREATE TABLE invoices (
    id                 uuid PRIMARY KEY,
    number             text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    shop               text NOT NULL,
    year               integer NOT NULL,
    seq                integer NOT NULL CHECK (seq > 0),
    payment_id         uuid NOT NULL REFERENCES payments (id),
    order_id           uuid NOT NULL,
    customer_id        uuid,
    -- Credit notes: the refund, and the invoice corrected.
    refund_id          uuid UNIQUE,
    credits_invoice_id uuid REFERENCES invoices (id),
    credits_number     text,
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    net                bigint NOT NULL,
    tax                bigint NOT NULL,
    total              bigint NOT NULL CHECK (total = net + tax),
    tax_rate_bps       integer NOT NULL CHECK (tax_rate_bps >= 0),
    lines              jsonb NOT NULL,
    customer           jsonb NOT NULL,
    seller             jsonb NOT NULL,
    issued_at          timestamptz NOT NULL,
    UNIQUE (shop, number),
    UNIQUE (shop, kind, year, seq),
    CHECK ((kind = 'credit_note') = (refund_id IS NOT NULL))
);

-- One invoice per payment.
CREATE UNIQUE INDEX invoices_one_per_payment ON invoices (payment_id) WHERE kind = 'invoice';
CREATE INDEX invoices_by_order ON invoices (order_id, issued_at);
CREATE INDEX invoices_by_customer ON invoices (customer_id, issued_at);
