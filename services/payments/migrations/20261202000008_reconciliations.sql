-- Daily reconciliation: one report per UTC day, with every payment that disagrees with its
-- provider.
CREATE TABLE reconciliations (
    id          uuid PRIMARY KEY,
    day         date NOT NULL UNIQUE,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    checked     integer NOT NULL DEFAULT 0,
    skipped     integer NOT NULL DEFAULT 0,
    unchecked   integer NOT NULL DEFAULT 0
);

CREATE TABLE reconciliation_mismatches (
    reconciliation_id  uuid NOT NULL REFERENCES reconciliations (id),
    payment_id         uuid NOT NULL REFERENCES payments (id),
    provider           text NOT NULL,
    provider_reference text,
    ours               text NOT NULL,
    theirs             text NOT NULL,
    PRIMARY KEY (reconciliation_id, payment_id)
);
