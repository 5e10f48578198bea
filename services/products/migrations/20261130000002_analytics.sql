-- Product views per day, flushed from each replica's counters every few seconds.
CREATE TABLE product_views (
    product_id uuid NOT NULL REFERENCES products (id),
    day        date NOT NULL,
    views      bigint NOT NULL,
    PRIMARY KEY (product_id, day)
);
CREATE INDEX stock_ledger_sales ON stock_ledger (created_at) WHERE reason = 'sale';
