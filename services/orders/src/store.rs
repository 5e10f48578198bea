//! SQL: orders and their lines, the append-only order event log, the saga's state. Every
//! change goes through [`place`] or [`append`], which write the log entry and update the
//! `orders` and `order_lines` projections in the caller's transaction; [`rebuild`] replays the
//! log into emptied projections with the same functions ([`Placed::from_entry`],
//! [`OrderRow::apply`]).

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, types::Json};
use tienda_events::{Money, money::Currency, order::CancelReason};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{
        checkout::{Address, PricedLine, Totals},
        log::{OrderEvent, PlacedLine},
        saga::Step,
        status::{IllegalTransition, Status},
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
    /// The carrier and tracking number, once shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    /// The money: charged at shipping, refunded after.
    pub payment: PaymentSummary,
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

/// What the customer was charged and given back.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PaymentSummary {
    /// Captured (at shipping); until then the total is only authorized.
    pub captured: Money,
    /// Refunded so far.
    pub refunded: Money,
}

/// How an order travels.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shipment {
    /// Who carries it (`SEUR`).
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
    /// When it was handed to the carrier.
    pub shipped_at: DateTime<Utc>,
    /// When it reached the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
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
    /// The address the customer checked out from.
    pub client_ip: Option<String>,
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
    /// Who carries it, once shipped.
    pub carrier: Option<String>,
    /// The carrier's tracking number.
    pub tracking_number: Option<String>,
    /// When it was handed to the carrier.
    pub shipped_at: Option<DateTime<Utc>>,
    /// When it reached the customer.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Minor units captured.
    pub captured: i64,
    /// Minor units refunded.
    pub refunded: i64,
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
    /// A restock is sent and unanswered.
    pub restock_pending: bool,
    /// When to send the authorization again after a retryable failure.
    pub retry_at: Option<DateTime<Utc>>,
}

const SAGA_COLUMNS: &str = "order_id, step, deadline, reservation_id, payment_id, \
     reservation_expires_at, void_pending, release_pending, restock_pending, retry_at";

/// The time a log entry records, as PostgreSQL stores it (microseconds), so the entry and the
/// projection written from it hold the same instant.
fn entry_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A `placed` entry as the projection needs it: the `orders` row (version 1, `pending`), the
/// Idempotency-Key and the lines.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The row.
    pub row: OrderRow,
    /// The Idempotency-Key it was placed with.
    pub checkout_key: String,
    /// What was ordered.
    pub lines: Vec<PlacedLine>,
}

impl Placed {
    /// The projection of order `id`'s first entry, logged at `at`; `None` when `event` is not
    /// a `placed` entry complete enough to build the order from.
    pub fn from_entry(id: Uuid, event: &OrderEvent, at: DateTime<Utc>) -> Option<Self> {
        let OrderEvent::Placed {
            customer_id: Some(customer_id),
            email,
            shipping_address,
            total,
            lines,
            subtotal: Some(subtotal),
            currency: Some(currency),
            payment_method: Some(payment_method),
            checkout_key: Some(checkout_key),
            client_ip,
            ..
        } = event
        else {
            return None;
        };
        if lines.is_empty() {
            return None;
        }
        Some(Self {
            row: OrderRow {
                id,
                customer_id: *customer_id,
                email: email.clone(),
                shipping_address: Json(shipping_address.clone()),
                payment_method: payment_method.clone(),
                client_ip: client_ip.clone(),
                status: Status::Pending,
                currency: currency.clone(),
                subtotal: subtotal.amount,
                total: total.amount,
                cancel_reason: None,
                cancel_detail: None,
                payment_action_url: None,
                payment_action_expires_at: None,
                carrier: None,
                tracking_number: None,
                shipped_at: None,
                delivered_at: None,
                captured: 0,
                refunded: 0,
                version: 1,
                created_at: at,
                updated_at: at,
            },
            checkout_key: checkout_key.clone(),
            lines: lines.clone(),
        })
    }
}

impl OrderRow {
    /// Applies log entry `seq` (any but the first), logged at `at`: the state machine's
    /// transition, the cancellation, the payment challenge. Pure; the one projection of an
    /// entry, used live by [`append`] and by [`rebuild`].
    pub fn apply(
        &mut self,
        seq: i32,
        event: &OrderEvent,
        at: DateTime<Utc>,
    ) -> Result<(), IllegalTransition> {
        if let Some(transition) = event.transition() {
            self.status = self.status.apply(transition)?;
        }
        match event {
            OrderEvent::Cancelled { reason, detail } => {
                self.cancel_reason = Some(Json(*reason));
                self.cancel_detail = Some(detail.clone());
            }
            OrderEvent::PaymentActionRequired { until, action_url } => {
                self.payment_action_url = action_url.clone();
                self.payment_action_expires_at = Some(*until);
            }
            OrderEvent::Shipped {
                carrier,
                tracking_number,
            } => {
                self.carrier = Some(carrier.clone());
                self.tracking_number = Some(tracking_number.clone());
                self.shipped_at = Some(at);
            }
            OrderEvent::Delivered => self.delivered_at = Some(at),
            OrderEvent::PaymentCaptured { amount } => self.captured = amount.amount,
            OrderEvent::Refunded { refunded_total, .. } => self.refunded = refunded_total.amount,
            _ => {}
        }
        self.version = seq;
        self.updated_at = at;
        Ok(())
    }
}

/// The projection's columns [`OrderRow::apply`] changes, `$1` to `$14` ([`bind_order`]). A
/// macro, so that [`append`] can put its log entry in front of it in one statement.
macro_rules! update_order {
    () => {
        "UPDATE orders SET status = $2, version = $3, cancel_reason = $4, cancel_detail = $5, \
                           payment_action_url = $6, payment_action_expires_at = $7, \
                           updated_at = $8, carrier = $9, tracking_number = $10, \
                           shipped_at = $11, delivered_at = $12, captured = $13, refunded = $14 \
         WHERE id = $1"
    };
}

/// The head of a statement appending to the log, its values in this order.
macro_rules! insert_order_event {
    () => {
        "INSERT INTO order_events (order_id, seq, kind, data, occurred_at) "
    };
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `$1` to `$14` of [`update_order!`].
fn bind_order<'q>(query: PgQuery<'q>, order: &'q OrderRow) -> PgQuery<'q> {
    query
        .bind(order.id)
        .bind(order.status)
        .bind(order.version)
        .bind(order.cancel_reason.as_ref().map(|r| reason_code(r.0)))
        .bind(&order.cancel_detail)
        .bind(&order.payment_action_url)
        .bind(order.payment_action_expires_at)
        .bind(order.updated_at)
        .bind(&order.carrier)
        .bind(&order.tracking_number)
        .bind(order.shipped_at)
        .bind(order.delivered_at)
        .bind(order.captured)
        .bind(order.refunded)
}

/// Writes a new order's projection (row and lines) and, given its `placed` entry, that entry
/// as the first of its log (in the statement that writes the lines); or finds the order this
/// customer already placed with this key (`Err(id)`, nothing written).
async fn write_placed(
    conn: &mut PgConnection,
    placed: &Placed,
    entry: Option<&OrderEvent>,
) -> Result<Result<(), Uuid>, Error> {
    let row = &placed.row;
    let inserted = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO orders (id, customer_id, checkout_key, email, shipping_address, \
                             payment_method, status, currency, subtotal, total, version, \
                             created_at, updated_at, client_ip) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT ON CONSTRAINT orders_checkout_key DO NOTHING RETURNING id",
    )
    .bind(row.id)
    .bind(row.customer_id)
    .bind(&placed.checkout_key)
    .bind(&row.email)
    .bind(&row.shipping_address)
    .bind(&row.payment_method)
    .bind(row.status)
    .bind(&row.currency)
    .bind(row.subtotal)
    .bind(row.total)
    .bind(row.version)
    .bind(row.created_at)
    .bind(row.updated_at)
    .bind(&row.client_ip)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        let existing = sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM orders WHERE customer_id = $1 AND checkout_key = $2",
        )
        .bind(row.customer_id)
        .bind(&placed.checkout_key)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(Err(existing));
    }
    let n = placed.lines.len();
    let mut line_nos = Vec::with_capacity(n);
    let mut product_ids = Vec::with_capacity(n);
    let mut skus = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut quantities = Vec::with_capacity(n);
    let mut prices = Vec::with_capacity(n);
    for (i, line) in placed.lines.iter().enumerate() {
        line_nos.push(i as i32 + 1);
        product_ids.push(line.product_id);
        skus.push(line.sku.as_str());
        names.push(line.name.as_str());
        quantities.push(line.quantity as i32);
        prices.push(line.unit_price.amount);
    }
    macro_rules! insert_lines {
        () => {
            "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, quantity, \
                                      unit_price) \
             SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::text[], $5::text[], \
                                      $6::int[], $7::bigint[])"
        };
    }
    let query = match entry {
        None => sqlx::query(insert_lines!()),
        Some(_) => sqlx::query(concat!(
            "WITH entry AS (",
            insert_order_event!(),
            "VALUES ($1, 1, $8, $9, $10)) ",
            insert_lines!()
        )),
    };
    let mut query = query
        .bind(row.id)
        .bind(&line_nos)
        .bind(&product_ids)
        .bind(&skus)
        .bind(&names)
        .bind(&quantities)
        .bind(&prices);
    if let Some(event) = entry {
        query = query
            .bind(event.kind())
            .bind(Json(event))
            .bind(row.created_at);
    }
    query.execute(&mut *conn).await?;
    Ok(Ok(()))
}

/// Writes what [`OrderRow::apply`] changed.
async fn write(conn: &mut PgConnection, order: &OrderRow) -> Result<(), Error> {
    bind_order(sqlx::query(update_order!()), order)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Places order `id`: its first log entry (`placed`, complete) and its projection (`pending`,
/// with its lines), or finds the order this customer already placed with this key
/// (`Err(id)`, nothing written).
pub async fn place(
    conn: &mut PgConnection,
    id: Uuid,
    event: &OrderEvent,
) -> Result<Result<OrderRow, Uuid>, Error> {
    let at = entry_time();
    let placed = Placed::from_entry(id, event, at).expect("checkout writes complete entries");
    if let Err(existing) = write_placed(conn, &placed, Some(event)).await? {
        return Ok(Err(existing));
    }
    Ok(Ok(placed.row))
}

/// A log entry applied to an order in memory ([`stage`]) and not written yet: [`append`] or
/// [`save_saga`] writes it with the projection it changed.
#[derive(Debug)]
pub struct Entry {
    seq: i32,
    kind: &'static str,
    data: Json<serde_json::Value>,
    at: DateTime<Utc>,
}

/// Applies `event` to `order` in memory ([`OrderRow::apply`]) and returns the log entry to
/// write with it: a transition the order's state does not allow is refused and `order` is
/// left as it was.
pub fn stage(order: &mut OrderRow, event: &OrderEvent) -> Result<Entry, Error> {
    let at = entry_time();
    let seq = order.version + 1;
    // `apply` refuses before it changes anything.
    order.apply(seq, event, at)?;
    let data = serde_json::to_value(event).expect("order events serialize");
    Ok(Entry {
        seq,
        kind: event.kind(),
        data: Json(data),
        at,
    })
}

/// Appends `event` to the order's log and updates the projection ([`OrderRow::apply`]): a
/// transition the order's state does not allow is refused and nothing is written. `order`
/// must be locked ([`lock`]); it is updated to what was written.
pub async fn append(
    conn: &mut PgConnection,
    order: &mut OrderRow,
    event: &OrderEvent,
) -> Result<(), Error> {
    let mut next = order.clone();
    let entry = stage(&mut next, event)?;
    // One statement, one round trip: the entry and the projection it changes.
    bind_entry(
        bind_order(
            sqlx::query(concat!(
                "WITH entry AS (",
                insert_order_event!(),
                "VALUES ($1, $15, $16, $17, $18)) ",
                update_order!()
            )),
            &next,
        ),
        &entry,
    )
    .execute(&mut *conn)
    .await?;
    *order = next;
    Ok(())
}

/// Binds `$15` to `$18`: the entry's values after [`bind_order`]'s.
fn bind_entry<'q>(query: PgQuery<'q>, entry: &'q Entry) -> PgQuery<'q> {
    query
        .bind(entry.seq)
        .bind(entry.kind)
        .bind(&entry.data)
        .bind(entry.at)
}

/// Empties the `orders` and `order_lines` projections and rebuilds them from the log, every
/// entry of every order applied in order by the functions the live path uses; returns how
/// many orders were rebuilt. Holds the log against appends meanwhile (the caller's
/// transaction makes it all or nothing); the saga's state is not touched.
pub async fn rebuild(conn: &mut PgConnection) -> Result<u64, Error> {
    // Appends wait (and appends under way finish first); readers see the old projection
    // until the transaction commits.
    sqlx::query("LOCK TABLE order_events IN SHARE MODE")
        .execute(&mut *conn)
        .await?;
    sqlx::query("LOCK TABLE orders, order_lines IN EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM order_lines")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM orders")
        .execute(&mut *conn)
        .await?;
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT order_id FROM order_events ORDER BY order_id")
            .fetch_all(&mut *conn)
            .await?;
    for &id in &ids {
        let entries: Vec<(i32, Json<serde_json::Value>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT seq, data, occurred_at FROM order_events WHERE order_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let unbuildable =
            |why: &str| Error::Conflict(format!("Order {id}'s log cannot be replayed: {why}."));
        let mut entries = entries.into_iter().map(|(seq, Json(data), at)| {
            serde_json::from_value::<OrderEvent>(data)
                .map(|event| (seq, Json(event), at))
                .map_err(|e| unbuildable(&format!("entry {seq} does not read ({e})")))
        });
        let placed = match entries.next().transpose()? {
            Some((1, Json(event), at)) => Placed::from_entry(id, &event, at).ok_or_else(|| {
                unbuildable("its placed entry predates the recording of the whole order")
            })?,
            _ => return Err(unbuildable("it does not start with entry 1")),
        };
        let mut row = placed.row.clone();
        for entry in entries {
            let (seq, Json(event), at) = entry?;
            if seq != row.version + 1 {
                return Err(unbuildable(&format!("entry {seq} follows {}", row.version)));
            }
            row.apply(seq, &event, at)
                .map_err(|e| unbuildable(&format!("entry {seq}: {e}")))?;
        }
        if write_placed(conn, &placed, None).await?.is_err() {
            return Err(unbuildable(
                "another order was placed with its Idempotency-Key",
            ));
        }
        write(conn, &row).await?;
    }
    Ok(ids.len() as u64)
}

/// The stored code of a cancellation reason (`out_of_stock`).
fn reason_code(reason: CancelReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(code)) => code,
        _ => unreachable!("CancelReason serializes as a string"),
    }
}

const ORDER_COLUMNS: &str = "id, customer_id, email, shipping_address, payment_method, client_ip, status, \
     currency, subtotal, total, to_jsonb(cancel_reason) AS cancel_reason, cancel_detail, \
     payment_action_url, payment_action_expires_at, carrier, tracking_number, shipped_at, \
     delivered_at, captured, refunded, version, created_at, updated_at";

/// The order, locked for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The order's row, not locked.
pub async fn get_row(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"
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
                .map(|l| {
                    item(
                        &row,
                        l.product_id,
                        &l.sku,
                        &l.name,
                        l.quantity as u32,
                        l.unit_price,
                    )
                })
                .collect();
            view(&row, items)
        })
        .collect())
}

/// One line as clients see it.
fn item(
    row: &OrderRow,
    product_id: Uuid,
    sku: &str,
    name: &str,
    quantity: u32,
    unit_price: i64,
) -> OrderItem {
    OrderItem {
        product_id,
        sku: sku.to_owned(),
        name: name.to_owned(),
        quantity,
        unit_price: row.money(unit_price),
        line_total: row.money(unit_price * i64::from(quantity)),
    }
}

/// The order as clients see it, from its row and its lines.
fn view(row: &OrderRow, items: Vec<OrderItem>) -> Order {
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
            (Status::AwaitingPaymentAction, Some(url), Some(expires_at)) => Some(PaymentAction {
                url: url.clone(),
                expires_at,
            }),
            _ => None,
        },
        shipment: match (&row.carrier, &row.tracking_number, row.shipped_at) {
            (Some(carrier), Some(tracking_number), Some(shipped_at)) => Some(Shipment {
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
                shipped_at,
                delivered_at: row.delivered_at,
            }),
            _ => None,
        },
        payment: PaymentSummary {
            captured: row.money(row.captured),
            refunded: row.money(row.refunded),
        },
        tracking_url: tracking_url(row.id),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// A just-placed order as clients see it, from what placing it wrote (no read back): the
/// row [`place`] returned and the lines it was placed with, in order.
pub fn placed_view(row: &OrderRow, lines: &[PricedLine]) -> Order {
    let items = lines
        .iter()
        .map(|l| {
            item(
                row,
                l.product_id,
                &l.sku,
                &l.name,
                l.quantity,
                l.unit_price.amount,
            )
        })
        .collect();
    view(row, items)
}

/// Whose order `id` is, from its log (the projection may be being rebuilt).
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, Error> {
    let customer: Option<Option<String>> = sqlx::query_scalar(
        "SELECT data->>'customer_id' FROM order_events WHERE order_id = $1 AND seq = 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(customer.map(|c| c.and_then(|c| c.parse().ok()).unwrap_or(Uuid::nil())))
}

/// Whether order `id` was checked out from its customer's cart.
pub async fn placed_from_cart(conn: &mut PgConnection, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE((data->>'from_cart')::boolean, false) FROM order_events \
         WHERE order_id = $1 AND seq = 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(false))
}

/// The order this customer placed with this checkout key, if any.
pub async fn by_checkout_key(
    conn: &mut PgConnection,
    customer_id: Uuid,
    key: &str,
) -> Result<Option<Uuid>, Error> {
    Ok(
        sqlx::query_scalar("SELECT id FROM orders WHERE customer_id = $1 AND checkout_key = $2")
            .bind(customer_id)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?,
    )
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

/// Which orders a list shows.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Only this customer's.
    pub customer_id: Option<Uuid>,
    /// Only in this status.
    pub status: Option<Status>,
    /// Placed at or after.
    pub from: Option<DateTime<Utc>>,
    /// Placed before.
    pub to: Option<DateTime<Utc>>,
}

/// Orders matching `filter`, newest first, after `before` (exclusive), at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    filter: &OrderFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Order>, Error> {
    let rows: Vec<OrderRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
         WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR created_at >= $3) \
           AND ($4::timestamptz IS NULL OR created_at < $4) \
           AND ($5::uuid IS NULL OR id < $5) \
         ORDER BY id DESC LIMIT $6"
    )))
    .bind(filter.customer_id)
    .bind(filter.status)
    .bind(filter.from)
    .bind(filter.to)
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

/// The saga `key` names and its order, both locked (the saga first, as every path locks
/// them), in one statement.
pub async fn lock_saga_and_order(
    conn: &mut PgConnection,
    key: SagaKey,
) -> Result<Option<(Saga, OrderRow)>, Error> {
    let (column, id) = match key {
        SagaKey::Reservation(id) => ("reservation_id", id),
        SagaKey::Payment(id) => ("payment_id", id),
        SagaKey::Order(id) => ("order_id", id),
    };
    // A locking clause reaches into the subquery; rows are locked in the order of the range
    // table, so `sagas` before `orders`.
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS}, o.* FROM sagas s, \
                LATERAL (SELECT {ORDER_COLUMNS} FROM orders WHERE orders.id = s.order_id) o \
          WHERE s.{column} = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(row) => Some((Saga::from_row(&row)?, OrderRow::from_row(&row)?)),
        None => None,
    })
}

/// The saga's columns [`save_saga`] writes with an entry, from `$19` on (after the order's
/// and the entry's).
macro_rules! update_saga {
    () => {
        "UPDATE sagas SET step = $19, deadline = $20, reservation_expires_at = $21, \
                void_pending = $22, release_pending = $23, retry_at = $24, \
                restock_pending = $25, updated_at = now() \
         WHERE order_id = $1"
    };
}

/// Writes the saga's state (step, deadline, expiry, pending compensations, retry) and, with
/// `staged`, the order's log entry and projection, in one statement. `order` is the saga's,
/// as [`stage`] left it.
pub async fn save_saga(
    conn: &mut PgConnection,
    saga: &Saga,
    order: &OrderRow,
    staged: Option<Entry>,
) -> Result<(), Error> {
    debug_assert_eq!(saga.order_id, order.id);
    let Some(entry) = &staged else {
        let query = sqlx::query(
            "UPDATE sagas SET step = $2, deadline = $3, reservation_expires_at = $4, \
                    void_pending = $5, release_pending = $6, retry_at = $7, \
                    restock_pending = $8, updated_at = now() \
             WHERE order_id = $1",
        )
        .bind(saga.order_id);
        bind_saga(query, saga).execute(&mut *conn).await?;
        return Ok(());
    };
    let query = sqlx::query(concat!(
        "WITH entry AS (",
        insert_order_event!(),
        "VALUES ($1, $15, $16, $17, $18)), projection AS (",
        update_order!(),
        ") ",
        update_saga!()
    ));
    bind_saga(bind_entry(bind_order(query, order), entry), saga)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Binds the saga's state after what is bound already (`$2` to `$8` alone, `$19` to `$25`
/// after an order and an entry).
fn bind_saga<'q>(query: PgQuery<'q>, saga: &'q Saga) -> PgQuery<'q> {
    query
        .bind(saga.step)
        .bind(saga.deadline)
        .bind(saga.reservation_expires_at)
        .bind(saga.void_pending)
        .bind(saga.release_pending)
        .bind(saga.retry_at)
        .bind(saga.restock_pending)
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
