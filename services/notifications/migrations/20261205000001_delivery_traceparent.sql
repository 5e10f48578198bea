-- The trace a delivery belongs to (W3C traceparent of the event that caused it), so the
-- worker's attempt — the SMTP or webhook call — is a span of the checkout that sent it.
ALTER TABLE deliveries ADD COLUMN traceparent text;
