//! The `refunds` table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// A refund as stored and shown to admins.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Refund {
    /// Chosen by orders.
    pub id: Uuid,
    /// The payment.
    pub payment_id: Uuid,
    /// Minor units of the payment's currency.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// Why.
    pub reason: String,
    /// `succeeded`; `pending` (the provider has yet to make it; followed up); `failed` (the
    /// provider gave up on it after it was pending); or `refused` (over the capture, the
    /// payment's state, or the provider refused it at once).
    pub status: String,
    /// Refunded of the payment after this refund.
    pub refunded_total: i64,
    /// Why it was refused.
    pub failure: Option<String>,
    /// The provider's id of the refund.
    pub provider_reference: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The refund command (the cause of a late answer).
    #[serde(skip)]
    pub command_id: Option<Uuid>,
    /// The refund command's correlation id.
    #[serde(skip)]
    pub correlation_id: Option<Uuid>,
    /// How often the provider was asked about it while pending.
    pub checks: i32,
    /// When a pending refund is asked about next.
    pub next_check_at: Option<DateTime<Utc>>,
    /// When a pending refund ended.
    pub settled_at: Option<DateTime<Utc>>,
}

/// A refund to record.
#[derive(Debug, Clone)]
pub struct NewRefund<'a> {
    /// Chosen by orders.
    pub id: Uuid,
    /// The payment.
    pub payment_id: Uuid,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: &'a str,
    /// Why.
    pub reason: &'a str,
    /// `succeeded`, `pending` or `refused` (with `failure`).
    pub status: &'static str,
    /// Refunded of the payment after it.
    pub refunded_total: i64,
    /// Why it was refused.
    pub failure: Option<&'a str>,
    /// The provider's id.
    pub provider_reference: Option<&'a str>,
    /// The refund command's id and correlation id.
    pub command: Option<(Uuid, Uuid)>,
}

/// One refund.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Refund>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM refunds WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Records a refund.
pub async fn insert(conn: &mut PgConnection, new: &NewRefund<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, amount, currency, reason, status, refunded_total, \
                              failure, provider_reference, command_id, correlation_id, \
                              next_check_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 CASE WHEN $6 = 'pending' THEN now() + $12 END)",
    )
    .bind(new.id)
    .bind(new.payment_id)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.reason)
    .bind(new.status)
    .bind(new.refunded_total)
    .bind(new.failure)
    .bind(new.provider_reference)
    .bind(new.command.map(|c| c.0))
    .bind(new.command.map(|c| c.1))
    .bind(follow_up_delay(0))
    .execute(conn)
    .await?;
    Ok(())
}

/// A payment's refunds, oldest first.
pub async fn for_payment(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<Refund>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM refunds WHERE payment_id = $1 ORDER BY id")
        .bind(payment_id)
        .fetch_all(conn)
        .await
}

/// What of a payment's refunds is pending at the provider: it counts against what is left
/// to refund.
pub async fn pending_total(conn: &mut PgConnection, payment_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0)::bigint FROM refunds \
         WHERE payment_id = $1 AND status = 'pending'",
    )
    .bind(payment_id)
    .fetch_one(conn)
    .await
}

/// How long after its `checks`-th check a pending refund is asked about again: 30 s,
/// doubling, at most six hours (card refunds take days; bank ones, weeks).
pub fn follow_up_delay(checks: i32) -> chrono::Duration {
    let seconds = 30_i64.saturating_mul(1 << checks.clamp(0, 10));
    chrono::Duration::seconds(seconds.min(6 * 3600))
}

/// Pending refunds due to be asked about, oldest check first: their ids.
pub async fn due(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM refunds WHERE status = 'pending' AND next_check_at <= now() \
         ORDER BY next_check_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A pending refund is still pending: asked again later.
pub async fn check_later(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let checks: i32 = sqlx::query_scalar(
        "UPDATE refunds SET checks = checks + 1 WHERE id = $1 AND status = 'pending' \
         RETURNING checks",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or_default();
    sqlx::query("UPDATE refunds SET next_check_at = now() + $2 WHERE id = $1")
        .bind(id)
        .bind(follow_up_delay(checks))
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks about pending refund `provider_reference` at once (a provider's webhook says it
/// changed); `false` when no pending refund has that reference.
pub async fn check_now(
    conn: &mut PgConnection,
    provider_reference: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refunds SET next_check_at = now() \
         WHERE provider_reference = $1 AND status = 'pending'",
    )
    .bind(provider_reference)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends a pending refund: `succeeded` with the payment's new refunded total, or `failed`
/// with the provider's reason.
pub async fn settle(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
    refunded_total: i64,
    failure: Option<&str>,
) -> Result<Refund, sqlx::Error> {
    sqlx::query_as(
        "UPDATE refunds SET status = $2, refunded_total = $3, failure = $4, settled_at = now(), \
                next_check_at = NULL \
         WHERE id = $1 AND status = 'pending' RETURNING *",
    )
    .bind(id)
    .bind(status)
    .bind(refunded_total)
    .bind(failure)
    .fetch_one(conn)
    .await
}
