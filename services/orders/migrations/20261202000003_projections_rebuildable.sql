-- The order event log is the source of truth; `orders` and `order_lines` are projections of
-- it that an operator can empty and rebuild (`POST /admin/orders/rebuild`). Nothing may
-- depend on a projection row existing: the log and the sagas no longer reference `orders`.

ALTER TABLE order_events DROP CONSTRAINT order_events_order_id_fkey;
ALTER TABLE sagas DROP CONSTRAINT sagas_order_id_fkey;
