-- The people campaigns go to: every registered user, from `user.registered` (and, for those
-- registered before this table, their welcome message).
CREATE TABLE people (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL,
    name          text NOT NULL DEFAULT '',
    registered_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO people (user_id, email, registered_at)
SELECT DISTINCT ON (user_id) user_id, recipient, created_at
FROM deliveries WHERE kind = 'welcome' AND channel = 'email' AND user_id IS NOT NULL
ORDER BY user_id, created_at
ON CONFLICT DO NOTHING;

-- A campaign: marketing content for one channel, sent to a segment of people in batches at
-- a rate. `cursor` is the last person enqueued (people are walked in user_id order): a batch's
-- deliveries and the cursor's advance commit together, so a crash resumes where the last
-- committed batch ended, and one delivery per (campaign, recipient, channel) makes a batch
-- run twice harmless.
CREATE TABLE campaigns (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    segment         jsonb NOT NULL,
    content         jsonb NOT NULL,
    rate_per_second integer NOT NULL CHECK (rate_per_second > 0),
    status          text NOT NULL CHECK (status IN ('scheduled', 'running', 'completed', 'cancelled')),
    cursor          uuid,
    enqueued        integer NOT NULL DEFAULT 0,
    start_at        timestamptz NOT NULL,
    next_batch_at   timestamptz NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX campaigns_due ON campaigns (next_batch_at) WHERE status IN ('scheduled', 'running');
