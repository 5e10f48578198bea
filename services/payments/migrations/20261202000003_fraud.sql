-- Every new payment's fraud decision with the reasons of the rules that spoke; admins decide
-- the ones held for review.
CREATE TABLE fraud_decisions (
    payment_id     uuid PRIMARY KEY REFERENCES payments (id),
    verdict        text NOT NULL CHECK (verdict IN ('allow', 'review', 'block')),
    reasons        jsonb NOT NULL,
    -- For reviews: what the admin decided, who and when.
    review_outcome text CHECK (review_outcome IN ('approved', 'rejected')),
    reviewed_by    text,
    review_note    text,
    reviewed_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fraud_decisions_open_reviews ON fraud_decisions (created_at)
    WHERE verdict = 'review' AND review_outcome IS NULL;
-- The rules read a customer's recent payments.
CREATE INDEX payments_by_customer ON payments (customer_id, created_at DESC);
CREATE INDEX payments_by_guest_email ON payments (email, created_at DESC) WHERE customer_id IS NULL;
