-- The metrics read the last hour of attempts by time (payments by time: payments_by_day).
CREATE INDEX payment_attempts_by_time ON payment_attempts (created_at);
