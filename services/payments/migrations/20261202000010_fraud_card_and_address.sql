-- What the card and address fraud rules read: the checkout's address and billing country
-- (from orders' authorize command), and the card's fingerprint and issuing country (from the
-- provider, looked up before the rules run). Indexed for the rules' windows.
ALTER TABLE payments
    ADD COLUMN client_ip        text,
    ADD COLUMN billing_country  text CHECK (billing_country ~ '^[A-Z]{2}$'),
    ADD COLUMN card_fingerprint text,
    ADD COLUMN card_country     text CHECK (card_country ~ '^[A-Z]{2}$');
CREATE INDEX payments_by_card ON payments (card_fingerprint, created_at)
    WHERE card_fingerprint IS NOT NULL;
CREATE INDEX payments_by_client_ip ON payments (client_ip, created_at)
    WHERE client_ip IS NOT NULL;
