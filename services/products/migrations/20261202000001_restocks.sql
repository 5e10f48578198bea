-- Units put back on the shelf by `tienda.inventory.cmd.restock` (a cancelled order's sold
-- stock that never left, returned goods). The id is the caller's: a repeated command finds
-- its row and changes nothing.
CREATE TABLE restocks (
    id         uuid PRIMARY KEY,
    order_id   uuid,
    items      jsonb NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
