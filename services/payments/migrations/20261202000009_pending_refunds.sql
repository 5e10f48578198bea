-- A refund the provider accepted but has not made yet is `pending`: it counts against what is
-- left to refund while it waits, and a worker asks the provider about it until it ends,
-- `succeeded` (then the payment's totals change and payment.refunded is published) or `failed`
-- (the money stays captured; payment.failed tells orders). `command_id` and `correlation_id` are the
-- refund command's, for the late answer.
ALTER TABLE refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('succeeded', 'refused', 'pending', 'failed'));
ALTER TABLE refunds
    ADD COLUMN command_id     uuid,
    ADD COLUMN correlation_id uuid,
    ADD COLUMN checks        integer NOT NULL DEFAULT 0,
    ADD COLUMN next_check_at timestamptz,
    ADD COLUMN settled_at    timestamptz;
CREATE INDEX refunds_pending ON refunds (next_check_at) WHERE status = 'pending';
