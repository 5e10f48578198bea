//! Stock and reservations. Sellable stock is `on_hand - reserved`; a reservation takes it with
//! one conditional `UPDATE` over all its lines inside a savepoint, and is rolled back whole when
//! any line is short — so stock is never oversold and never partially held, whatever runs at
//! the same time. Table constraints (`0 <= reserved <= on_hand`) back this up.
//!
//! Every function takes the connection it runs on: HTTP handlers pass a transaction, the saga
//! command consumer passes the transaction its inbox row is in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection, PgPool};
use tienda_events::{
    Envelope,
    inventory::{
        InventoryAdjusted, InventoryCommitted, InventoryLowStock, InventoryReleased,
        InventoryReserved, Line, ReleaseReason, Shortage,
    },
};
use tienda_kit::outbox;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    SOURCE,
    catalog::valid_sku,
    error::{Error, Fields},
};

/// A SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stock {
    /// Stock keeping unit.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
    /// Units that can be reserved: `on_hand - reserved`.
    pub available: i64,
}

/// `PUT /v1/inventory/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    /// The counted on-hand stock.
    pub on_hand: i64,
    /// Why (recorded in the stock ledger): 1-200 characters.
    pub reason: String,
    /// Optional new threshold for `inventory.low_stock`.
    #[serde(default)]
    pub low_stock_threshold: Option<i64>,
}

/// A line of a reservation request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// Stock keeping unit.
    pub sku: String,
    /// Units, 1 to 1,000,000.
    pub quantity: i64,
}

/// `POST /v1/inventory/reservations` (and the `reserve` command).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationRequest {
    /// Chosen by the caller (UUID); repeating a request with it never reserves twice.
    pub reservation_id: Uuid,
    /// The order it is for, if any.
    #[serde(default)]
    pub order_id: Option<Uuid>,
    /// 1-100 lines with distinct SKUs: all are held, or none.
    pub items: Vec<ItemRequest>,
    /// Seconds until an uncommitted reservation is released, 1 to 86,400.
    pub ttl_seconds: i64,
}

/// A reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Reservation {
    /// Its id.
    #[sqlx(rename = "id")]
    pub reservation_id: Uuid,
    /// The order, if any.
    pub order_id: Option<Uuid>,
    /// Where it is in its life.
    pub status: ReservationStatus,
    /// What it holds (or held), by SKU.
    #[sqlx(json)]
    pub items: Vec<ReservedItem>,
    /// When a held reservation is released unless committed.
    pub expires_at: DateTime<Utc>,
}

/// Where a reservation is: held until committed (sold), released, or expired (released when
/// its TTL passed). Stored and sent as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Its units are held.
    Held,
    /// Sold: its units left on-hand.
    Committed,
    /// Given back on request.
    Released,
    /// Given back because its TTL passed.
    Expired,
}

impl ReservationStatus {
    /// The status a release for `reason` leaves.
    pub fn released_for(reason: ReleaseReason) -> Self {
        match reason {
            ReleaseReason::Requested => Self::Released,
            ReleaseReason::Expired => Self::Expired,
        }
    }
}

impl std::fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        })
    }
}

/// A reserved line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct ReservedItem {
    /// Stock keeping unit.
    pub sku: String,
    /// Units.
    pub quantity: i64,
}

impl ReservationRequest {
    /// Checks the request; the lines come back sorted by SKU (the canonical form).
    pub fn validate(&self) -> Result<Vec<ReservedItem>, Error> {
        let mut fields = Fields::default();
        if self.items.is_empty() || self.items.len() > 100 {
            fields.add("items", "must hold 1 to 100 lines");
        }
        if !(1..=86_400).contains(&self.ttl_seconds) {
            fields.add("ttl_seconds", "must be 1 to 86400");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, item) in self.items.iter().enumerate() {
            if !valid_sku(&item.sku) {
                fields.add(format!("items[{i}].sku"), "is not a SKU");
            } else if !seen.insert(item.sku.as_str()) {
                fields.add(format!("items[{i}].sku"), "appears twice");
            }
            if !(1..=1_000_000).contains(&item.quantity) {
                fields.add(format!("items[{i}].quantity"), "must be 1 to 1000000");
            }
        }
        fields.into_result()?;
        let mut items: Vec<ReservedItem> = self
            .items
            .iter()
            .map(|i| ReservedItem {
                sku: i.sku.clone(),
                quantity: i.quantity,
            })
            .collect();
        items.sort();
        Ok(items)
    }
}

pub(crate) fn lines(items: &[ReservedItem]) -> Vec<Line> {
    items
        .iter()
        .map(|i| Line {
            sku: i.sku.clone(),
            quantity: u32::try_from(i.quantity).unwrap_or(u32::MAX),
        })
        .collect()
}

/// The stock of a SKU.
pub async fn stock(conn: &mut PgConnection, sku: &str) -> Result<Option<Stock>, Error> {
    let row: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, on_hand, reserved FROM inventory WHERE sku = $1")
            .bind(sku)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(sku, on_hand, reserved)| Stock {
        sku,
        on_hand,
        reserved,
        available: on_hand - reserved,
    }))
}

/// Sets a SKU's on-hand stock after a count, with a ledger entry and `inventory.adjusted`.
pub async fn adjust(
    conn: &mut PgConnection,
    sku: &str,
    adjustment: &Adjustment,
    actor: &str,
) -> Result<Stock, Error> {
    let mut fields = Fields::default();
    if adjustment.on_hand < 0 {
        fields.add("on_hand", "must not be negative");
    }
    let reason = adjustment.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        fields.add("reason", "must be 1 to 200 characters");
    }
    if adjustment.low_stock_threshold.is_some_and(|t| t < 0) {
        fields.add("low_stock_threshold", "must not be negative");
    }
    fields.into_result()?;
    let mut tx = conn.begin().await?;
    let (old, reserved, stored_threshold): (i64, i64, i64) = sqlx::query_as(
        "SELECT on_hand, reserved, low_stock_threshold FROM inventory WHERE sku = $1 FOR UPDATE",
    )
    .bind(sku)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::NotFound(format!("No SKU {sku} in the catalog.")))?;
    let threshold = adjustment.low_stock_threshold.unwrap_or(stored_threshold);
    if adjustment.on_hand < reserved {
        return Err(Error::Conflict(format!(
            "{reserved} units of {sku} are reserved; on_hand cannot go below that. Release \
             reservations first."
        )));
    }
    sqlx::query(
        "UPDATE inventory SET on_hand = $2, low_stock_threshold = $3, updated_at = now() \
         WHERE sku = $1",
    )
    .bind(sku)
    .bind(adjustment.on_hand)
    .bind(threshold)
    .execute(&mut *tx)
    .await?;
    let delta = adjustment.on_hand - old;
    ledger(
        &mut tx,
        sku,
        delta,
        adjustment.on_hand,
        reason,
        Some(actor),
        None,
    )
    .await?;
    let event = InventoryAdjusted {
        sku: sku.to_owned(),
        on_hand: adjustment.on_hand,
        delta,
        reason: reason.to_owned(),
    };
    outbox::enqueue(&mut tx, Envelope::new(SOURCE, event)).await?;
    let available = adjustment.on_hand - reserved;
    low_stock(&mut tx, sku, available - delta, available, threshold).await?;
    tx.commit().await?;
    Ok(Stock {
        sku: sku.to_owned(),
        on_hand: adjustment.on_hand,
        reserved,
        available,
    })
}

async fn ledger(
    conn: &mut PgConnection,
    sku: &str,
    delta: i64,
    on_hand_after: i64,
    reason: &str,
    actor: Option<&str>,
    reservation: Option<Uuid>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO stock_ledger (sku, delta, on_hand_after, reason, actor, reservation_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sku)
    .bind(delta)
    .bind(on_hand_after)
    .bind(reason)
    .bind(actor)
    .bind(reservation)
    .execute(conn)
    .await?;
    Ok(())
}

/// `inventory.low_stock` when available stock crossed the threshold downwards.
async fn low_stock(
    conn: &mut PgConnection,
    sku: &str,
    before: i64,
    after: i64,
    threshold: i64,
) -> Result<(), Error> {
    if after <= threshold && before > threshold {
        let event = InventoryLowStock {
            sku: sku.to_owned(),
            available: after,
            threshold,
        };
        outbox::enqueue(conn, Envelope::new(SOURCE, event)).await?;
    }
    Ok(())
}

/// Holds stock for every line, or for none. Returns the reservation and whether this call
/// made it (`false`: it existed — a retry — and nothing more was reserved).
pub async fn reserve(
    conn: &mut PgConnection,
    request: &ReservationRequest,
) -> Result<(Reservation, bool), Error> {
    let items = request.validate()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_reserve(conn, request, &items).await {
            // Two reservations locking the same SKUs in different orders: PostgreSQL aborts
            // one; nothing was held, so it runs again.
            Err(Error::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("40P01") && attempt < 5 =>
            {
                tracing::debug!(reservation = %request.reservation_id, "deadlock; retrying");
            }
            other => return other,
        }
    }
}

async fn try_reserve(
    conn: &mut PgConnection,
    request: &ReservationRequest,
    items: &[ReservedItem],
) -> Result<(Reservation, bool), Error> {
    let mut tx = conn.begin().await?;
    let canonical = sqlx::types::Json(items);
    let expires_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO reservations (id, order_id, status, items, expires_at) \
         VALUES ($1, $2, 'held', $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (id) DO NOTHING RETURNING expires_at",
    )
    .bind(request.reservation_id)
    .bind(request.order_id)
    .bind(canonical)
    .bind(request.ttl_seconds as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(expires_at) = expires_at else {
        // A retry (or a concurrent duplicate, which waited for the first to commit).
        let existing = load(&mut tx, request.reservation_id)
            .await?
            .expect("the conflicting row is committed");
        tx.rollback().await?;
        if existing.items != items {
            return Err(Error::IdempotencyMismatch(format!(
                "Reservation {} exists with other items; use a new reservation_id.",
                request.reservation_id
            )));
        }
        return Ok((existing, false));
    };

    let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
    let quantities: Vec<i64> = items.iter().map(|i| i.quantity).collect();
    // The one conditional update: a line is taken only if its SKU is sellable and has the
    // units; PostgreSQL re-checks the condition on the newest row version after waiting for
    // a concurrent update of the same row. The rows are locked in SKU order first, so two
    // reservations of the same SKUs queue instead of deadlocking.
    let taken: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "WITH locked AS (SELECT sku FROM inventory WHERE sku = ANY($1) ORDER BY sku FOR UPDATE) \
         UPDATE inventory i SET reserved = i.reserved + r.qty, updated_at = now() \
         FROM unnest($1::text[], $2::bigint[]) AS r(sku, qty), locked l \
         WHERE l.sku = r.sku AND i.sku = r.sku AND i.on_hand - i.reserved >= r.qty \
           AND EXISTS (SELECT 1 FROM variants v JOIN products p ON p.id = v.product_id \
                       WHERE v.sku = i.sku AND v.removed_at IS NULL \
                         AND p.deleted_at IS NULL AND p.status = 'active') \
         RETURNING i.sku, i.on_hand - i.reserved AS available, i.low_stock_threshold, r.qty",
    )
    .bind(&skus)
    .bind(&quantities)
    .fetch_all(&mut *tx)
    .await?;
    if taken.len() < items.len() {
        tx.rollback().await?;
        return Err(Error::Insufficient(shortages(conn, items).await?));
    }
    for (sku, available, threshold, qty) in &taken {
        low_stock(&mut tx, sku, available + qty, *available, *threshold).await?;
    }
    let event = InventoryReserved {
        reservation_id: request.reservation_id,
        order_id: request.order_id,
        items: lines(items),
        expires_at,
    };
    outbox::enqueue(&mut tx, Envelope::new(SOURCE, event)).await?;
    tx.commit().await?;
    Ok((
        Reservation {
            reservation_id: request.reservation_id,
            order_id: request.order_id,
            status: ReservationStatus::Held,
            items: items.to_vec(),
            expires_at,
        },
        true,
    ))
}

/// What each line lacked (available now; 0 for SKUs that are not sellable).
async fn shortages(
    conn: &mut PgConnection,
    items: &[ReservedItem],
) -> Result<Vec<Shortage>, Error> {
    let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.sku, i.on_hand - i.reserved AS available FROM inventory i \
         JOIN variants v ON v.sku = i.sku JOIN products p ON p.id = v.product_id \
         WHERE i.sku = ANY($1) AND v.removed_at IS NULL AND p.deleted_at IS NULL \
           AND p.status = 'active'",
    )
    .bind(&skus)
    .fetch_all(conn)
    .await?;
    let available = |sku: &str| {
        rows.iter()
            .find(|(found, _)| found == sku)
            .map_or(0, |(_, available)| *available)
    };
    Ok(items
        .iter()
        .filter(|i| available(&i.sku) < i.quantity)
        .map(|i| Shortage {
            sku: i.sku.clone(),
            requested: u32::try_from(i.quantity).unwrap_or(u32::MAX),
            available: u32::try_from(available(&i.sku).max(0)).unwrap_or(u32::MAX),
        })
        .collect())
}

/// A reservation by id.
pub async fn load(conn: &mut PgConnection, id: Uuid) -> Result<Option<Reservation>, Error> {
    load_with(conn, id, "").await
}

async fn load_with(
    conn: &mut PgConnection,
    id: Uuid,
    lock: &str,
) -> Result<Option<Reservation>, Error> {
    let sql = format!(
        "SELECT id, order_id, status, items, expires_at FROM reservations WHERE id = $1 {lock}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// What a commit found.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// Held until now: sold by this call (`inventory.committed` is written).
    Committed(Reservation),
    /// Sold before (a repeated commit): nothing changed.
    AlreadyCommitted(Reservation),
    /// Released or expired before: not sold, nothing changed.
    NotHeld(Reservation),
    /// Held past its TTL: released (`expired`) by this call, `inventory.released` written.
    ExpiredNow(Reservation),
}

/// Turns a held reservation into a sale: its units leave on-hand (ledger: `sale`). Committing
/// again is a no-op; a released or expired reservation cannot be committed — nor can a held
/// one whose TTL passed, which is released as `expired` here (its `inventory.released` is
/// caused by `cause` when given, so the saga that asked hears why).
pub async fn commit_reservation<C>(
    conn: &mut PgConnection,
    id: Uuid,
    cause: Option<&Envelope<C>>,
) -> Result<CommitOutcome, Error> {
    let mut tx = conn.begin().await?;
    let mut reservation = load_with(&mut tx, id, "FOR UPDATE")
        .await?
        .ok_or_else(|| Error::NotFound(format!("No reservation {id}.")))?;
    match reservation.status {
        ReservationStatus::Committed => return Ok(CommitOutcome::AlreadyCommitted(reservation)),
        ReservationStatus::Held if reservation.expires_at <= Utc::now() => {
            settle(&mut tx, &mut reservation, ReleaseReason::Expired, cause).await?;
            tx.commit().await?;
            return Ok(CommitOutcome::ExpiredNow(reservation));
        }
        ReservationStatus::Held => {}
        ReservationStatus::Released | ReservationStatus::Expired => {
            return Ok(CommitOutcome::NotHeld(reservation));
        }
    }
    let skus: Vec<&str> = reservation.items.iter().map(|i| i.sku.as_str()).collect();
    let quantities: Vec<i64> = reservation.items.iter().map(|i| i.quantity).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "UPDATE inventory i SET on_hand = i.on_hand - r.qty, reserved = i.reserved - r.qty, \
                updated_at = now() \
         FROM unnest($1::text[], $2::bigint[]) AS r(sku, qty) WHERE i.sku = r.sku \
         RETURNING i.sku, i.on_hand, r.qty",
    )
    .bind(&skus)
    .bind(&quantities)
    .fetch_all(&mut *tx)
    .await?;
    for (sku, on_hand, qty) in rows {
        ledger(&mut tx, &sku, -qty, on_hand, "sale", None, Some(id)).await?;
    }
    sqlx::query("UPDATE reservations SET status = $2, settled_at = now() WHERE id = $1")
        .bind(id)
        .bind(ReservationStatus::Committed)
        .execute(&mut *tx)
        .await?;
    let event = InventoryCommitted {
        reservation_id: id,
        items: lines(&reservation.items),
    };
    let envelope = match cause {
        Some(cause) => Envelope::caused_by(SOURCE, event, cause),
        None => Envelope::new(SOURCE, event),
    };
    outbox::enqueue(&mut tx, envelope).await?;
    tx.commit().await?;
    reservation.status = ReservationStatus::Committed;
    Ok(CommitOutcome::Committed(reservation))
}

/// [`commit_reservation`] for the HTTP API: a reservation that is not held is a conflict.
/// Returns the reservation and whether this call sold it.
pub async fn commit(conn: &mut PgConnection, id: Uuid) -> Result<(Reservation, bool), Error> {
    match commit_reservation::<()>(conn, id, None).await? {
        CommitOutcome::Committed(r) => Ok((r, true)),
        CommitOutcome::AlreadyCommitted(r) => Ok((r, false)),
        CommitOutcome::NotHeld(r) | CommitOutcome::ExpiredNow(r) => Err(Error::Conflict(format!(
            "Reservation {id} is {}; it cannot be committed (its stock was released).",
            r.status
        ))),
    }
}

/// Gives a held reservation's units back. Releasing again is a no-op; a committed
/// reservation cannot be released.
pub async fn release(conn: &mut PgConnection, id: Uuid) -> Result<(Reservation, bool), Error> {
    let mut tx = conn.begin().await?;
    let mut reservation = load_with(&mut tx, id, "FOR UPDATE")
        .await?
        .ok_or_else(|| Error::NotFound(format!("No reservation {id}.")))?;
    match reservation.status {
        ReservationStatus::Released | ReservationStatus::Expired => {
            return Ok((reservation, false));
        }
        ReservationStatus::Committed => {
            return Err(Error::Conflict(format!(
                "Reservation {id} is committed (sold); it cannot be released."
            )));
        }
        ReservationStatus::Held => {}
    }
    settle::<()>(&mut tx, &mut reservation, ReleaseReason::Requested, None).await?;
    tx.commit().await?;
    Ok((reservation, true))
}

/// Releases a locked, held reservation; its `inventory.released` is caused by `cause` if given.
async fn settle<C>(
    conn: &mut PgConnection,
    reservation: &mut Reservation,
    reason: ReleaseReason,
    cause: Option<&Envelope<C>>,
) -> Result<(), Error> {
    let skus: Vec<&str> = reservation.items.iter().map(|i| i.sku.as_str()).collect();
    let quantities: Vec<i64> = reservation.items.iter().map(|i| i.quantity).collect();
    sqlx::query(
        "UPDATE inventory i SET reserved = i.reserved - r.qty, updated_at = now() \
         FROM unnest($1::text[], $2::bigint[]) AS r(sku, qty) WHERE i.sku = r.sku",
    )
    .bind(&skus)
    .bind(&quantities)
    .execute(&mut *conn)
    .await?;
    let status = ReservationStatus::released_for(reason);
    sqlx::query("UPDATE reservations SET status = $2, settled_at = now() WHERE id = $1")
        .bind(reservation.reservation_id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    let event = InventoryReleased {
        reservation_id: reservation.reservation_id,
        items: lines(&reservation.items),
        reason,
    };
    let envelope = match cause {
        Some(cause) => Envelope::caused_by(SOURCE, event, cause),
        None => Envelope::new(SOURCE, event),
    };
    outbox::enqueue(conn, envelope).await?;
    reservation.status = status;
    Ok(())
}

/// Releases up to 100 held reservations whose TTL passed; replicas share the work
/// (`SKIP LOCKED`). Returns how many.
pub async fn sweep(pool: &PgPool) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM reservations WHERE status = 'held' AND expires_at <= now() \
         ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        if let Some(mut reservation) = load(&mut tx, *id).await? {
            settle::<()>(&mut tx, &mut reservation, ReleaseReason::Expired, None).await?;
        }
    }
    tx.commit().await?;
    Ok(ids.len())
}

/// Puts `items` back on the shelf once per `restock_id` (on-hand grows, each line in the stock
/// ledger as `restock: <reason>`), answering `inventory.restocked` caused by `cause`. A restock
/// seen before changes nothing and is answered again with what it did then. SKUs the catalog
/// does not stock are left out of the answer.
pub async fn restock<C: tienda_events::Message>(
    conn: &mut PgConnection,
    command: &tienda_events::inventory::RestockInventory,
    cause: &Envelope<C>,
) -> Result<bool, Error> {
    use tienda_events::inventory::InventoryRestocked;
    let mut tx = conn.begin().await?;
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO restocks (id, order_id, items, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(command.restock_id)
    .bind(command.order_id)
    .bind(sqlx::types::Json(&command.items))
    .bind(&command.reason)
    .fetch_optional(&mut *tx)
    .await?;
    let items = if inserted.is_some() {
        let skus: Vec<&str> = command.items.iter().map(|l| l.sku.as_str()).collect();
        let quantities: Vec<i64> = command
            .items
            .iter()
            .map(|l| i64::from(l.quantity))
            .collect();
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "UPDATE inventory i SET on_hand = i.on_hand + r.qty, updated_at = now() \
             FROM unnest($1::text[], $2::bigint[]) AS r(sku, qty) WHERE i.sku = r.sku \
             RETURNING i.sku, i.on_hand, r.qty",
        )
        .bind(&skus)
        .bind(&quantities)
        .fetch_all(&mut *tx)
        .await?;
        let reason = format!("restock: {}", command.reason);
        let mut restocked = Vec::with_capacity(rows.len());
        for (sku, on_hand, qty) in rows {
            ledger(&mut tx, &sku, qty, on_hand, &reason, None, None).await?;
            restocked.push(Line {
                sku,
                quantity: u32::try_from(qty).unwrap_or(u32::MAX),
            });
        }
        restocked.sort_by(|a, b| a.sku.cmp(&b.sku));
        sqlx::query("UPDATE restocks SET items = $2 WHERE id = $1")
            .bind(command.restock_id)
            .bind(sqlx::types::Json(&restocked))
            .execute(&mut *tx)
            .await?;
        restocked
    } else {
        let sqlx::types::Json(items): sqlx::types::Json<Vec<Line>> =
            sqlx::query_scalar("SELECT items FROM restocks WHERE id = $1")
                .bind(command.restock_id)
                .fetch_one(&mut *tx)
                .await?;
        items
    };
    let event = InventoryRestocked {
        restock_id: command.restock_id,
        order_id: command.order_id,
        items,
    };
    outbox::enqueue(&mut tx, Envelope::caused_by(SOURCE, event, cause)).await?;
    tx.commit().await?;
    Ok(inserted.is_some())
}
