-- SMS and push. A user's phone number (E.164) is where their text messages go; devices are
-- where push goes: an FCM registration token, or a Web Push subscription (its endpoint, and
-- the keys its payload is encrypted to). A token registered again by someone else moves to
-- them: a device belongs to whoever signed in on it last.
ALTER TABLE preferences
    ADD COLUMN phone text CONSTRAINT preferences_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$');

CREATE TABLE push_devices (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL,
    provider     text NOT NULL CHECK (provider IN ('fcm', 'webpush')),
    -- The FCM registration token, or the Web Push endpoint.
    token        text NOT NULL,
    -- Web Push only: the subscription's keys (base64url).
    p256dh       text,
    auth         text,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT push_devices_once UNIQUE (provider, token),
    CONSTRAINT push_devices_keys CHECK ((provider = 'webpush') = (p256dh IS NOT NULL AND auth IS NOT NULL))
);
CREATE INDEX push_devices_by_user ON push_devices (user_id, created_at);

-- Per category and channel, what a user chose; a pair not here takes the channel's default
-- (on, except marketing by SMS or push, which needs a yes).
CREATE TABLE channel_preferences (
    user_id  uuid NOT NULL,
    category text NOT NULL,
    channel  text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    enabled  boolean NOT NULL,
    PRIMARY KEY (user_id, category, channel)
);

-- Edited templates may carry the short text of SMS and push (null: the shipped one).
ALTER TABLE template_versions ADD COLUMN short text;

ALTER TABLE suppressions DROP CONSTRAINT suppressions_reason_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check
    CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribed'));
