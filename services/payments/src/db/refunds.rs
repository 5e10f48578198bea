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
    /// `succeeded`, or `refused` (over the capture, or the payment's state).
    pub status: String,
    /// Refunded of the payment after this refund.
    pub refunded_total: i64,
    /// Why it was refused.
    pub failure: Option<String>,
    /// The provider's id of the refund.
    pub provider_reference: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
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
    /// Whether it was made (else refused, with `failure`).
    pub succeeded: bool,
    /// Refunded of the payment after it.
    pub refunded_total: i64,
    /// Why it was refused.
    pub failure: Option<&'a str>,
    /// The provider's id.
    pub provider_reference: Option<&'a str>,
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
                              failure, provider_reference) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(new.payment_id)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.reason)
    .bind(if new.succeeded {
        "succeeded"
    } else {
        "refused"
    })
    .bind(new.refunded_total)
    .bind(new.failure)
    .bind(new.provider_reference)
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
