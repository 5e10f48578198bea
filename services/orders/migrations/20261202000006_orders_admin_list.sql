-- Admins list every order newest first, or those in one status.
CREATE INDEX orders_by_status ON orders (status, id DESC);
