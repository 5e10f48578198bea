-- A provider call is recorded as `started`, committed on its own, before the call is made: if the
-- command's transaction is then lost (process killed, commit failed), the redelivered command
-- finds the attempt and repeats the call with the same idempotency key to learn what the
-- provider did, instead of answering "expired, nothing was done".
ALTER TABLE payment_attempts DROP CONSTRAINT payment_attempts_outcome_check;
ALTER TABLE payment_attempts ADD CONSTRAINT payment_attempts_outcome_check
    CHECK (outcome IN ('started', 'succeeded', 'requires_action', 'declined', 'failed'));
CREATE INDEX payment_attempts_started ON payment_attempts (payment_id, idempotency_key)
    WHERE outcome = 'started';

-- 3-D Secure challenge tokens are credentials: only their SHA-256 is kept (and kept after the
-- answer, so a second answer is told "already answered").
ALTER TABLE payments ADD COLUMN challenge_token_sha256 bytea
    CHECK (octet_length(challenge_token_sha256) = 32);
UPDATE payments SET challenge_token_sha256 = sha256(convert_to(challenge_token, 'UTF8'))
    WHERE challenge_token IS NOT NULL;
ALTER TABLE payments DROP COLUMN challenge_token;
CREATE INDEX payments_lapsed_challenges ON payments (challenge_expires_at)
    WHERE status = 'requires_action';
