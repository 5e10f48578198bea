//! SQL: orders and their lines, the append-only order event log, the saga's state. Every
//! change goes through [`append`], which writes the log entry and updates the `orders`
//! projection in the caller's transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, types::Json};
use tienda_events::{Money, money::Currency, order::CancelReason};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{
        checkout::{Address, PricedLine, Totals},
        log::OrderEvent,
        saga::Step,
        status::Status,
    },
    error::Error,
};

/// An order as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Order {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Where it is: `pending`, `reserved`, `awaiting_payment_action`, `authorized`,
    /// `confirmed`, `shipped`, `delivered`, `cancelled`, `refunded`.
    pub status: Status,
    /// The customer.
    pub customer_id: Uuid,
    /// Where to write to about it.
    pub email: String,
    /// Where it ships.
    pub shipping_address: Address,
    /// What was ordered, at the prices accepted.
    pub items: Vec<OrderItem>,
    /// What it costs.
    pub totals: Totals,
    /// Why it was cancelled, when it was.
    pub cancellation: Option<Cancellation>,
    /// While the order is `awaiting_payment_action`: where its owner completes the payment
    /// challenge (3-D Secure) and until when. Shown to the owner only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_action: Option<PaymentAction>,
    /// Where to follow it.
    pub tracking_url: String,
    /// Placed.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A line of an order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderItem {
    /// The product.
    pub product_id: Uuid,
    /// The variant.
    pub sku: String,
    /// The product's name when ordered.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// One unit's price.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// Why an order was cancelled.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Cancellation {
    /// `out_of_stock`, `payment_declined`, `payment_failed`, `timed_out`,
    /// `customer_requested`, `admin_requested`.
    #[schema(value_type = String)]
    pub reason: CancelReason,
    /// A sentence the customer can read.
    pub detail: String,
}

/// A payment challenge the customer must complete.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentAction {
    /// Where the customer completes the challenge.
    pub url: String,
    /// When the order is cancelled if it is not completed.
    pub expires_at: DateTime<Utc>,
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The `orders` row.
#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    /// Id.
    pub id: Uuid,
    /// Customer.
    pub customer_id: Uuid,
    /// Email.
    pub email: String,
    /// Address.
    pub shipping_address: Json<Address>,
    /// The provider token.
    pub payment_method: String,
    /// State.
    pub status: Status,
    /// Currency of every amount.
    pub currency: String,
    /// Minor units.
    pub subtotal: i64,
    /// Minor units.
    pub total: i64,
    /// Cancellation code.
    pub cancel_reason: Option<Json<CancelReason>>,
    /// Cancellation sentence.
    pub cancel_detail: Option<String>,
    /// The payment challenge's URL, once one was required.
    pub payment_action_url: Option<String>,
    /// Until when the challenge can be completed.
    pub payment_action_expires_at: Option<DateTime<Utc>>,
    /// Last log entry applied.
    pub version: i32,
    /// Placed.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    /// The order's money.
    pub fn money(&self, amount: i64) -> Money {
        Money {
            amount,
            currency: self
                .currency
                .parse::<Currency>()
                .expect("checked by the table"),
        }
    }
}

#[derive(Debug, FromRow)]
struct LineRow {
    order_id: Uuid,
    product_id: Uuid,
    sku: String,
    name: String,
    quantity: i32,
    unit_price: i64,
}

/// The saga's state of one order.
#[derive(Debug, Clone, FromRow)]
pub struct Saga {
    /// The order.
    pub order_id: Uuid,
    /// Where it is.
    pub step: Step,
    /// When the current step gives up.
    pub deadline: Option<DateTime<Utc>>,
    /// The reservation asked of inventory.
    pub reservation_id: Uuid,
    /// The payment asked of payments.
    pub payment_id: Uuid,
    /// When inventory releases the reservation unless committed (once reserved).
    pub reservation_expires_at: Option<DateTime<Utc>>,
    /// A void is sent and unanswered.
    pub void_pending: bool,
    /// A release is sent and unanswered.
    pub release_pending: bool,
    /// When to send the authorization again after a retryable failure.
    pub retry_at: Option<DateTime<Utc>>,
}

const SAGA_COLUMNS: &str = "order_id, step, deadline, reservation_id, payment_id, \
     reservation_expires_at, void_pending, release_pending, retry_at";

/// What checkout writes.
#[derive(Debug)]
pub struct NewOrder<'a> {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Customer.
    pub customer_id: Uuid,
    /// The Idempotency-Key.
    pub checkout_key: &'a str,
    /// Email.
    pub email: &'a str,
    /// Address.
    pub shipping_address: &'a Address,
    /// Provider token.
    pub payment_method: &'a str,
    /// Priced lines.
    pub lines: &'a [PricedLine],
    /// Money.
    pub totals: Totals,
}

/// Inserts a `pending` order with its lines (version 0: [`append`] its first entry), or finds
/// the order this customer already placed with this key (`Err(id)`).
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewOrder<'_>,
) -> Result<Result<(), Uuid>, Error> {
    let inserted = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO orders (id, customer_id, checkout_key, email, shipping_address, \
                             payment_method, status, currency, subtotal, total, version) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, 0) \
         ON CONFLICT ON CONSTRAINT orders_checkout_key DO NOTHING RETURNING id",
    )
    .bind(new.id)
    .bind(new.customer_id)
    .bind(new.checkout_key)
    .bind(new.email)
    .bind(Json(new.shipping_address))
    .bind(new.payment_method)
    .bind(new.totals.total.currency.as_str())
    .bind(new.totals.subtotal.amount)
    .bind(new.totals.total.amount)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        let existing = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM orders WHERE customer_id = $1 AND checkout_key = $2",
        )
        .bind(new.customer_id)
        .bind(new.checkout_key)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(Err(existing));
    }
    let n = new.lines.len();
    let mut line_nos = Vec::with_capacity(n);
    let mut product_ids = Vec::with_capacity(n);
    let mut skus = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut quantities = Vec::with_capacity(n);
    let mut prices = Vec::with_capacity(n);
    for (i, line) in new.lines.iter().enumerate() {
        line_nos.push(i as i32 + 1);
        product_ids.push(line.product_id);
        skus.push(line.sku.as_str());
        names.push(line.name.as_str());
        quantities.push(line.quantity as i32);
        prices.push(line.unit_price.amount);
    }
    sqlx::query(
        "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, quantity, unit_price) \
         SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::text[], $5::text[], $6::int[], \
                                  $7::bigint[])",
    )
    .bind(new.id)
    .bind(&line_nos)
    .bind(&product_ids)
    .bind(&skus)
    .bind(&names)
    .bind(&quantities)
    .bind(&prices)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(()))
}

/// Appends `event` to the order's log and updates the projection: the order moves to
/// `status` (a cancellation also records why). `order` must be locked ([`lock`]) or new; it
/// is updated to what was written.
pub async fn append(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    event: &OrderEvent,
    status: Status,
) -> Result<(), Error> {
    let seq = order.version + 1;
    sqlx::query("INSERT INTO order_events (order_id, seq, kind, data) VALUES ($1, $2, $3, $4)")
        .bind(order.id)
        .bind(seq)
        .bind(event.kind())
        .bind(Json(event))
        .execute(&mut *conn)
        .await?;
    let (reason, detail) = match event {
        OrderEvent::Cancelled { reason, detail } => (Some(Json(*reason)), Some(detail.clone())),
        _ => (order.cancel_reason, order.cancel_detail.clone()),
    };
    let (action_url, action_expires) = match event {
        OrderEvent::PaymentActionRequired { until, action_url } => {
            (action_url.clone(), Some(*until))
        }
        _ => (
            order.payment_action_url.clone(),
            order.payment_action_expires_at,
        ),
    };
    order.updated_at = sqlx::query_scalar(
        "UPDATE orders SET status = $2, version = $3, cancel_reason = $4, cancel_detail = $5, \
                           payment_action_url = $6, payment_action_expires_at = $7, \
                           updated_at = now() \
         WHERE id = $1 RETURNING updated_at",
    )
    .bind(order.id)
    .bind(status)
    .bind(seq)
    .bind(reason.map(|r| reason_code(r.0)))
    .bind(&detail)
    .bind(&action_url)
    .bind(action_expires)
    .fetch_one(&mut *conn)
    .await?;
    order.payment_action_url = action_url;
    order.payment_action_expires_at = action_expires;
    order.version = seq;
    order.status = status;
    order.cancel_reason = reason;
    order.cancel_detail = detail;
    Ok(())
}

/// The stored code of a cancellation reason (`out_of_stock`).
fn reason_code(reason: CancelReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(code)) => code,
        _ => unreachable!("CancelReason serializes as a string"),
    }
}

const ORDER_COLUMNS: &str = "id, customer_id, email, shipping_address, payment_method, status, \
     currency, subtotal, total, to_jsonb(cancel_reason) AS cancel_reason, cancel_detail, \
     payment_action_url, payment_action_expires_at, version, created_at, updated_at";

/// The order, locked for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Orders with their lines, as clients see them, in the order of `rows`.
async fn views(conn: &mut PgConnection, rows: Vec<OrderRow>) -> Result<Vec<Order>, Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT order_id, product_id, sku, name, quantity, unit_price FROM order_lines \
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let items = lines
                .iter()
                .filter(|l| l.order_id == row.id)
                .map(|l| OrderItem {
                    product_id: l.product_id,
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity as u32,
                    unit_price: row.money(l.unit_price),
                    line_total: row.money(l.unit_price * i64::from(l.quantity)),
                })
                .collect();
            Order {
                id: row.id,
                status: row.status,
                customer_id: row.customer_id,
                email: row.email.clone(),
                shipping_address: row.shipping_address.0.clone(),
                items,
                totals: Totals {
                    subtotal: row.money(row.subtotal),
                    total: row.money(row.total),
                },
                cancellation: row.cancel_reason.map(|reason| Cancellation {
                    reason: reason.0,
                    detail: row.cancel_detail.clone().unwrap_or_default(),
                }),
                payment_action: match (
                    row.status,
                    &row.payment_action_url,
                    row.payment_action_expires_at,
                ) {
                    (Status::AwaitingPaymentAction, Some(url), Some(expires_at)) => {
                        Some(PaymentAction {
                            url: url.clone(),
                            expires_at,
                        })
                    }
                    _ => None,
                },
                tracking_url: tracking_url(row.id),
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect())
}

/// Where a customer follows an order.
pub fn tracking_url(id: Uuid) -> String {
    format!("/v1/orders/{id}")
}

/// One order as clients see it.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Order>, Error> {
    let row: Option<OrderRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(views(conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// A customer's orders, newest first, after `before` (exclusive), at most `limit`.
pub async fn list_for_customer(
    conn: &mut PgConnection,
    customer_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Order>, Error> {
    let rows: Vec<OrderRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
         WHERE customer_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    views(conn, rows).await
}

/// Starts an order's saga at its first step.
pub async fn insert_saga(conn: &mut PgConnection, saga: &Saga) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO sagas (order_id, step, deadline, reservation_id, payment_id) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(saga.order_id)
    .bind(saga.step)
    .bind(saga.deadline)
    .bind(saga.reservation_id)
    .bind(saga.payment_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Which saga a reply is for.
#[derive(Debug, Clone, Copy)]
pub enum SagaKey {
    /// By the reservation asked of inventory.
    Reservation(Uuid),
    /// By the payment asked of payments.
    Payment(Uuid),
    /// By its order.
    Order(Uuid),
}

/// The saga, locked for the rest of the transaction; `None` when no order asked for it.
pub async fn lock_saga(conn: &mut PgConnection, key: SagaKey) -> Result<Option<Saga>, Error> {
    let (column, id) = match key {
        SagaKey::Reservation(id) => ("reservation_id", id),
        SagaKey::Payment(id) => ("payment_id", id),
        SagaKey::Order(id) => ("order_id", id),
    };
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE {column} = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Writes the saga's state (step, deadline, expiry, pending compensations, retry).
pub async fn save_saga(conn: &mut PgConnection, saga: &Saga) -> Result<(), Error> {
    sqlx::query(
        "UPDATE sagas SET step = $2, deadline = $3, reservation_expires_at = $4, \
                void_pending = $5, release_pending = $6, retry_at = $7, updated_at = now() \
         WHERE order_id = $1",
    )
    .bind(saga.order_id)
    .bind(saga.step)
    .bind(saga.deadline)
    .bind(saga.reservation_expires_at)
    .bind(saga.void_pending)
    .bind(saga.release_pending)
    .bind(saga.retry_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Up to `limit` orders whose saga has a deadline or a retry due, soonest first (not locked:
/// each is locked in its own transaction by [`lock_due_saga`]).
pub async fn due_sagas(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM ( \
             SELECT order_id, deadline AS due FROM sagas WHERE deadline <= now() \
             UNION ALL \
             SELECT order_id, retry_at FROM sagas WHERE retry_at <= now()) d \
         GROUP BY order_id ORDER BY min(due) LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// The order's saga if something about it is still due, locked (`None` if another
/// transaction holds it or it moved on).
pub async fn lock_due_saga(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Saga>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas \
         WHERE order_id = $1 AND (deadline <= now() OR retry_at <= now()) \
         FOR UPDATE SKIP LOCKED"
    )))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Puts a saga that could not be handled out of the sweeper's way until `until`.
pub async fn postpone_saga(
    conn: &mut PgConnection,
    order_id: Uuid,
    until: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE sagas SET deadline = CASE WHEN deadline IS NULL THEN NULL ELSE $2 END, \
                retry_at = CASE WHEN retry_at IS NULL THEN NULL ELSE $2 END \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(until)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An order's lines as priced at checkout.
pub async fn lines(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<PricedLine>, Error> {
    let currency: String = sqlx::query_scalar("SELECT currency FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&mut *conn)
        .await?;
    let currency: Currency = currency.parse().expect("checked by the table");
    let rows: Vec<LineRow> = sqlx::query_as(
        "SELECT order_id, product_id, sku, name, quantity, unit_price FROM order_lines \
         WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|l| PricedLine {
            product_id: l.product_id,
            sku: l.sku,
            name: l.name,
            quantity: l.quantity as u32,
            unit_price: Money {
                amount: l.unit_price,
                currency,
            },
        })
        .collect())
}
