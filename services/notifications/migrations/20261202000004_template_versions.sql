-- Edited templates: a kind's subject and bodies in one locale, one row per version. The
-- shipped templates are version 1 and live in the binary; edits are 2, 3, … and the newest is
-- used. Versions are never changed or deleted (deliveries name the version they used).
CREATE TABLE template_versions (
    kind       text NOT NULL,
    locale     text NOT NULL,
    version    integer NOT NULL CHECK (version >= 2),
    subject    text NOT NULL,
    body_text  text NOT NULL,
    body_html  text NOT NULL,
    created_by text NOT NULL,
    note       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, locale, version)
);
