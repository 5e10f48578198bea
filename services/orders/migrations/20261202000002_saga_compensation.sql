-- The saga confirms only when inventory has committed the stock (`committing`), and keeps
-- re-sending its compensations until they are answered (`compensating`). It remembers when
-- the reservation expires (payment deadlines stay below it), which compensations are still
-- unanswered, and when a retryable authorization failure is to be retried. Orders show the
-- customer where to complete a 3-D Secure challenge.

ALTER TABLE orders
    ADD COLUMN payment_action_url        text,
    ADD COLUMN payment_action_expires_at timestamptz;

ALTER TABLE sagas DROP CONSTRAINT sagas_step_check;
ALTER TABLE sagas ADD CONSTRAINT sagas_step_check CHECK (step IN ('reserving', 'authorizing',
    'committing', 'compensating', 'completed', 'compensated'));

ALTER TABLE sagas
    -- When inventory releases the reservation unless it is committed.
    ADD COLUMN reservation_expires_at timestamptz,
    -- Sent and not yet answered: re-sent whenever `deadline` passes.
    ADD COLUMN void_pending    boolean NOT NULL DEFAULT false,
    ADD COLUMN release_pending boolean NOT NULL DEFAULT false,
    -- When to send the authorization again after a retryable failure.
    ADD COLUMN retry_at timestamptz;

DROP INDEX sagas_due;
CREATE INDEX sagas_due ON sagas (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX sagas_retry_due ON sagas (retry_at) WHERE retry_at IS NOT NULL;
