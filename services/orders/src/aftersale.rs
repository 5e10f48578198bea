//! After the sale: the payment is captured when the order ships; refunds go out for a
//! cancellation after shipping and for returns; returned goods are restocked. Each money
//! command is a row in `payment_actions` (capture, or a refund with its `refund_id`), sent
//! through the outbox and re-sent by [`sweep`] until payments answers, so a lost message or a
//! crash delays it and never drops it. Payments is idempotent by payment (capture) and by
//! `refund_id`, so a re-send never moves money twice. Every step is an entry in the order's
//! log.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tienda_events::{
    Money,
    inventory::{InventoryRestocked, Line, RestockInventory},
    order::OrderRefunded,
    payment::{
        CapturePayment, InvoiceDetails, InvoiceLine, PaymentCaptured, PaymentFailed,
        PaymentOperation, PaymentRefunded, RefundPayment,
    },
};
use tienda_kit::outbox;
use uuid::Uuid;

use crate::{
    domain::{
        log::{OrderEvent, ReturnLine},
        status::Status,
    },
    error::Error,
    saga::{Timeouts, about},
    store::{self, OrderRow},
};

/// A pending or settled capture or refund.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Action {
    id: Uuid,
    order_id: Uuid,
    kind: String,
    amount: i64,
    reason: String,
}

fn after(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The payment the order's saga authorized.
async fn payment_id(conn: &mut PgConnection, order_id: Uuid) -> Result<Uuid, Error> {
    sqlx::query_scalar("SELECT payment_id FROM sagas WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::NotFound(format!("the saga of order {order_id}")))
}

/// Who is billed and for what: the order's lines and its shipping address (the invoice
/// payments issues on capture).
async fn invoice_details(
    conn: &mut PgConnection,
    order: &OrderRow,
) -> Result<InvoiceDetails, Error> {
    let lines = crate::store::lines(conn, order.id).await?;
    let address = &order.shipping_address.0;
    Ok(InvoiceDetails {
        customer_name: address.name.clone(),
        address: [
            Some(address.line1.clone()),
            address.line2.clone(),
            Some(format!("{} {}", address.postal_code, address.city)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        country: address.country.clone(),
        lines: lines
            .into_iter()
            .map(|l| InvoiceLine {
                sku: l.sku,
                description: l.name,
                quantity: l.quantity,
                unit_price: l.unit_price,
            })
            .collect(),
    })
}

/// Enqueues the command for `action`.
async fn send(
    conn: &mut PgConnection,
    action: &Action,
    order: &OrderRow,
    t: Timeouts,
) -> Result<(), Error> {
    let payment_id = payment_id(conn, order.id).await?;
    let deadline = after(Utc::now(), t.compensation_deadline);
    if action.kind == "capture" {
        let capture = CapturePayment {
            payment_id,
            order_id: order.id,
            amount: Some(order.money(action.amount)),
            deadline,
            invoice: Some(invoice_details(conn, order).await?),
        };
        outbox::enqueue(conn, about(capture, order.id, None)).await?;
    } else {
        let refund = RefundPayment {
            refund_id: action.id,
            payment_id,
            order_id: order.id,
            amount: order.money(action.amount),
            reason: action.reason.clone(),
            deadline,
        };
        outbox::enqueue(conn, about(refund, order.id, None)).await?;
    }
    Ok(())
}

/// Asks payments to capture the order's total, in the shipping transaction.
pub async fn capture_on_ship(
    conn: &mut PgConnection,
    order: &OrderRow,
    t: Timeouts,
) -> Result<(), Error> {
    let action = Action {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: "capture".into(),
        amount: order.total,
        reason: "shipped".into(),
    };
    let inserted = sqlx::query(
        "INSERT INTO payment_actions (id, order_id, kind, amount, reason, status, next_attempt_at) \
         VALUES ($1, $2, 'capture', $3, $4, 'pending', $5) ON CONFLICT DO NOTHING",
    )
    .bind(action.id)
    .bind(order.id)
    .bind(action.amount)
    .bind(&action.reason)
    .bind(after(Utc::now(), t.resend))
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        send(conn, &action, order, t).await?;
    }
    Ok(())
}

/// Refunds up to `amount` of what was captured and not yet refunded (or asked to be); returns
/// the refund's id, or `None` when nothing is left to refund. `order` must be locked.
pub async fn request_refund(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    amount: i64,
    reason: &str,
    return_id: Option<Uuid>,
    t: Timeouts,
) -> Result<Option<Uuid>, Error> {
    let asked: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM payment_actions \
         WHERE order_id = $1 AND kind = 'refund' AND status <> 'failed'",
    )
    .bind(order.id)
    .fetch_one(&mut *conn)
    .await?;
    let amount = amount.min(order.captured - asked);
    if amount <= 0 {
        return Ok(None);
    }
    let action = Action {
        id: Uuid::now_v7(),
        order_id: order.id,
        kind: "refund".into(),
        amount,
        reason: reason.to_owned(),
    };
    sqlx::query(
        "INSERT INTO payment_actions \
             (id, order_id, kind, amount, reason, return_id, status, next_attempt_at) \
         VALUES ($1, $2, 'refund', $3, $4, $5, 'pending', $6)",
    )
    .bind(action.id)
    .bind(order.id)
    .bind(amount)
    .bind(reason)
    .bind(return_id)
    .bind(after(Utc::now(), t.resend))
    .execute(&mut *conn)
    .await?;
    let entry = OrderEvent::RefundRequested {
        refund_id: action.id,
        amount: order.money(amount),
        reason: reason.to_owned(),
        return_id,
    };
    store::append(conn, order, &entry).await?;
    send(conn, &action, order, t).await?;
    Ok(Some(action.id))
}

/// Marks a pending action settled; `None` when it was not pending (a duplicate answer).
async fn settle(
    conn: &mut PgConnection,
    id_or_order: Uuid,
    kind: &str,
    status: &str,
) -> Result<Option<Action>, Error> {
    let column = if kind == "capture" { "order_id" } else { "id" };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE payment_actions SET status = $3, next_attempt_at = NULL, updated_at = now() \
         WHERE {column} = $1 AND kind = $2 AND status = 'pending' \
         RETURNING id, order_id, kind, amount, reason"
    )))
    .bind(id_or_order)
    .bind(kind)
    .bind(status)
    .fetch_optional(&mut *conn)
    .await?)
}

async fn locked(conn: &mut PgConnection, order_id: Uuid) -> Result<OrderRow, Error> {
    store::lock(conn, order_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("order {order_id}")))
}

/// `payment.captured`: recorded; for an order cancelled after shipping, refunded at once.
pub async fn captured(
    conn: &mut PgConnection,
    e: &PaymentCaptured,
    t: Timeouts,
) -> Result<(), Error> {
    let mut order = locked(conn, e.order_id).await?;
    if settle(conn, e.order_id, "capture", "succeeded")
        .await?
        .is_none()
    {
        return Ok(()); // answered before
    }
    store::append(
        conn,
        &mut order,
        &OrderEvent::PaymentCaptured { amount: e.amount },
    )
    .await?;
    if order.status == Status::Cancelled {
        request_refund(
            conn,
            &mut order,
            e.amount.amount,
            "order cancelled after shipping",
            None,
            t,
        )
        .await?;
    }
    Ok(())
}

/// `payment.refunded`: recorded; the order is `refunded` once all of it is, and
/// `order.refunded` tells the customer.
pub async fn refunded(conn: &mut PgConnection, e: &PaymentRefunded) -> Result<(), Error> {
    let mut order = locked(conn, e.order_id).await?;
    if settle(conn, e.refund_id, "refund", "succeeded")
        .await?
        .is_none()
    {
        return Ok(());
    }
    let full = e.refunded_total.amount >= order.total
        && matches!(
            order.status,
            Status::Confirmed | Status::Shipped | Status::Delivered
        );
    let entry = OrderEvent::Refunded {
        refund_id: e.refund_id,
        amount: e.amount,
        refunded_total: e.refunded_total,
        full,
    };
    store::append(conn, &mut order, &entry).await?;
    let event = OrderRefunded {
        order_id: order.id,
        customer_id: Some(order.customer_id),
        email: order.email.clone(),
        amount: e.amount,
        refunded_total: e.refunded_total,
        full,
    };
    outbox::enqueue(conn, about(event, order.id, None)).await?;
    Ok(())
}

/// `payment.failed` for a capture or a refund: sent again when it may yet succeed (payments
/// unavailable, or the command expired in a queue); otherwise recorded for an admin.
pub async fn failed(conn: &mut PgConnection, f: &PaymentFailed) -> Result<(), Error> {
    let (key, kind) = match (f.operation, f.refund_id) {
        (PaymentOperation::Capture, _) => (f.order_id, "capture"),
        (PaymentOperation::Refund, Some(refund_id)) => (refund_id, "refund"),
        _ => return Ok(()),
    };
    if f.retryable || f.expired {
        tracing::warn!(order_id = %f.order_id, kind, detail = %f.detail, "a payment command failed; it is sent again");
        return Ok(());
    }
    let mut order = locked(conn, f.order_id).await?;
    let Some(action) = settle(conn, key, kind, "failed").await? else {
        return Ok(());
    };
    tracing::error!(order_id = %f.order_id, kind, detail = %f.detail, "a payment command was refused; an admin must act");
    let entry = if kind == "capture" {
        OrderEvent::CaptureFailed {
            detail: f.detail.clone(),
        }
    } else {
        OrderEvent::RefundFailed {
            refund_id: action.id,
            detail: f.detail.clone(),
        }
    };
    store::append(conn, &mut order, &entry).await
}

/// After an admin cancelled a shipped order: refund what is captured. A capture still in
/// flight is refunded when its answer comes ([`captured`]).
pub async fn cancelled_after_shipping(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    t: Timeouts,
) -> Result<(), Error> {
    if order.captured > 0 {
        request_refund(
            conn,
            order,
            order.captured,
            "order cancelled after shipping",
            None,
            t,
        )
        .await?;
    }
    Ok(())
}

/// Sends due pending captures and refunds again; returns how many.
pub async fn sweep(db: &PgPool, t: Timeouts) -> Result<usize, Error> {
    let mut tx = db.begin().await?;
    let due: Vec<Action> = sqlx::query_as(
        "SELECT id, order_id, kind, amount, reason FROM payment_actions \
         WHERE status = 'pending' AND next_attempt_at <= now() \
         ORDER BY next_attempt_at LIMIT 50 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for action in &due {
        let Some(order) = store::get_row(&mut tx, action.order_id).await? else {
            continue;
        };
        send(&mut tx, action, &order, t).await?;
        sqlx::query(
            "UPDATE payment_actions SET next_attempt_at = $2, updated_at = now() WHERE id = $1",
        )
        .bind(action.id)
        .bind(after(Utc::now(), t.resend))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// A return as clients see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Return {
    /// The return.
    pub id: Uuid,
    /// `requested` (waiting for the goods), `received` (refund on its way), `refunded`.
    pub status: String,
    /// What goes back.
    pub items: Vec<ReturnLine>,
    /// What it refunds.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
}

/// The order's returns, from its log.
pub async fn returns(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<Return>, Error> {
    let rows: Vec<(sqlx::types::Json<OrderEvent>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT data, occurred_at FROM order_events WHERE order_id = $1 \
         AND kind IN ('return_requested', 'return_received', 'refund_requested', 'refunded') \
         ORDER BY seq",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Return> = Vec::new();
    let mut refunds: Vec<(Uuid, Uuid)> = Vec::new();
    for (sqlx::types::Json(event), at) in rows {
        match event {
            OrderEvent::ReturnRequested {
                return_id,
                items,
                amount,
                reason,
            } => out.push(Return {
                id: return_id,
                status: "requested".into(),
                items,
                amount,
                reason,
                requested_at: at,
            }),
            OrderEvent::ReturnReceived { return_id } => {
                if let Some(r) = out.iter_mut().find(|r| r.id == return_id) {
                    r.status = "received".into();
                }
            }
            OrderEvent::RefundRequested {
                refund_id,
                return_id: Some(return_id),
                ..
            } => refunds.push((refund_id, return_id)),
            OrderEvent::Refunded { refund_id, .. } => {
                if let Some((_, return_id)) = refunds.iter().find(|(r, _)| *r == refund_id)
                    && let Some(r) = out.iter_mut().find(|r| r.id == *return_id)
                {
                    r.status = "refunded".into();
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Records a return of `items` from a delivered order (locked): each SKU must be in the
/// order, and no more units than were bought and are not in another return.
pub async fn request_return(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    items: &[ReturnLine],
    reason: &str,
) -> Result<Return, Error> {
    if order.status != Status::Delivered {
        return Err(Error::Conflict(format!(
            "Only a delivered order can be returned; this one is {}.",
            order.status
        )));
    }
    let lines = store::lines(conn, order.id).await?;
    let earlier = returns(conn, order.id).await?;
    let mut fields = Vec::new();
    let mut amount: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let Some(line) = lines.iter().find(|l| l.sku == item.sku) else {
            fields.push((
                format!("items[{i}].sku"),
                format!("{} is not in the order", item.sku),
            ));
            continue;
        };
        let returned: u32 = earlier
            .iter()
            .flat_map(|r| &r.items)
            .filter(|l| l.sku == item.sku)
            .map(|l| l.quantity)
            .sum();
        let left = line.quantity.saturating_sub(returned);
        if item.quantity > left {
            fields.push((
                format!("items[{i}].quantity"),
                format!("at most {left} units of {} can still be returned", item.sku),
            ));
            continue;
        }
        amount += line.unit_price.amount * i64::from(item.quantity);
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let return_id = Uuid::now_v7();
    let entry = OrderEvent::ReturnRequested {
        return_id,
        items: items.to_vec(),
        amount: order.money(amount),
        reason: reason.to_owned(),
    };
    store::append(conn, order, &entry).await?;
    Ok(Return {
        id: return_id,
        status: "requested".into(),
        items: items.to_vec(),
        amount: order.money(amount),
        reason: reason.to_owned(),
        // The entry's time: `append` moved the order to it.
        requested_at: order.updated_at,
    })
}

/// The returned goods arrived (admin): restocked and refunded. Returns the return, now
/// `received`.
pub async fn receive_return(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    return_id: Uuid,
    t: Timeouts,
) -> Result<Return, Error> {
    let mut found = returns(conn, order.id)
        .await?
        .into_iter()
        .find(|r| r.id == return_id)
        .ok_or_else(|| Error::NotFound(format!("No return {return_id} for this order.")))?;
    if found.status != "requested" {
        return Err(Error::Conflict(format!(
            "Return {return_id} is already {}.",
            found.status
        )));
    }
    // The refund is bounded by what was captured: not before the capture is settled.
    let capture: Option<String> = sqlx::query_scalar(
        "SELECT status FROM payment_actions WHERE order_id = $1 AND kind = 'capture'",
    )
    .bind(order.id)
    .fetch_optional(&mut *conn)
    .await?;
    if capture.as_deref() == Some("pending") {
        return Err(Error::Conflict(
            "The order's payment is still being charged; receive the return once the capture \
             is settled (see the order's timeline), so its refund can be sent."
                .into(),
        ));
    }
    store::append(conn, order, &OrderEvent::ReturnReceived { return_id }).await?;
    let restock = RestockInventory {
        restock_id: return_id,
        order_id: Some(order.id),
        items: found
            .items
            .iter()
            .map(|l| Line {
                sku: l.sku.clone(),
                quantity: l.quantity,
            })
            .collect(),
        reason: format!("return {return_id} of order {}", order.id),
    };
    outbox::enqueue(conn, about(restock, order.id, None)).await?;
    let reason = format!("return: {}", found.reason);
    request_refund(
        conn,
        order,
        found.amount.amount,
        &reason,
        Some(return_id),
        t,
    )
    .await?;
    found.status = "received".into();
    Ok(found)
}

/// `inventory.restocked` for a return: recorded once.
pub async fn return_restocked(
    conn: &mut PgConnection,
    e: &InventoryRestocked,
    _cause: Uuid,
) -> Result<(), Error> {
    let Some(order_id) = e.order_id else {
        return Ok(()); // not a restock of ours
    };
    let Some(mut order) = store::lock(conn, order_id).await? else {
        return Ok(());
    };
    let recorded: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM order_events WHERE order_id = $1 \
         AND kind = 'return_restocked' AND data->>'return_id' = $2)",
    )
    .bind(order_id)
    .bind(e.restock_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    if recorded {
        return Ok(());
    }
    let entry = OrderEvent::ReturnRestocked {
        return_id: e.restock_id,
    };
    store::append(conn, &mut order, &entry).await
}
