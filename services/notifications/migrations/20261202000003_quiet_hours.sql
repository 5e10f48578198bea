-- A user's time zone (IANA) and quiet hours: non-critical messages written inside the
-- window wait until it ends (`deliveries.next_attempt_at`).
ALTER TABLE preferences
    ADD COLUMN timezone    text,
    ADD COLUMN quiet_start time,
    ADD COLUMN quiet_end   time,
    ADD CONSTRAINT preferences_quiet_both CHECK ((quiet_start IS NULL) = (quiet_end IS NULL));
