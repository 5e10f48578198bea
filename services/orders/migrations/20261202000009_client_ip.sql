-- The address the customer checked out from (the gateway's X-Real-IP), for the payment fraud
-- rules; null for orders placed before it was recorded or without a gateway in front.
ALTER TABLE orders ADD COLUMN client_ip text;
