-- The order view shows its shipment: the carrier, the tracking number, when it shipped and
-- when it was delivered (from the `shipped` and `delivered` log entries).
ALTER TABLE orders
    ADD COLUMN carrier         text,
    ADD COLUMN tracking_number text,
    ADD COLUMN shipped_at      timestamptz,
    ADD COLUMN delivered_at    timestamptz;
