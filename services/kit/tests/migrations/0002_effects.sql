-- What the kit's consumer tests' handlers do: one row per applied message.
CREATE TABLE effects (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    note text NOT NULL DEFAULT ''
);
