-- Admins' analytics read payments by the day they were created.
CREATE INDEX payments_by_day ON payments (created_at);
