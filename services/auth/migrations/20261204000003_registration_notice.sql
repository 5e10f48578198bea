-- When the owner of an address was last told that someone tried to register it: at most one
-- such mail an hour, so registration cannot be used to flood someone's mailbox.
ALTER TABLE users ADD COLUMN registration_notice_at timestamptz;
