//! The `payment_attempts` table: every provider call (and challenge answer) with its outcome,
//! kept apart from the payment's current state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Which operation an attempt made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Authorize.
    Authorize,
    /// A 3-D Secure challenge answered.
    Challenge,
    /// Capture.
    Capture,
    /// Void.
    Void,
    /// Refund.
    Refund,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Challenge => "challenge",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider is being called; committed before the call, so a lost commit afterwards
    /// leaves a trace (see [`start`]).
    Started,
    /// Done.
    Succeeded,
    /// A challenge was asked for.
    RequiresAction,
    /// Refused by the provider or the bank.
    Declined,
    /// No usable answer.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Succeeded => "succeeded",
            Outcome::RequiresAction => "requires_action",
            Outcome::Declined => "declined",
            Outcome::Failed => "failed",
        }
    }
}

/// An attempt to record.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    /// The payment.
    pub payment_id: Uuid,
    /// What was tried.
    pub operation: Operation,
    /// How much, where it applies.
    pub amount: Option<i64>,
    /// The key sent to the provider.
    pub idempotency_key: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// Decline code.
    pub code: Option<&'a str>,
    /// What happened.
    pub detail: Option<&'a str>,
    /// The provider's id.
    pub provider_reference: Option<&'a str>,
    /// The command's envelope.
    pub command_id: Option<Uuid>,
}

/// An attempt as stored and shown to admins.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attempt {
    /// Its id.
    pub id: Uuid,
    /// `authorize`, `challenge`, `capture`, `void` or `refund`.
    pub operation: String,
    /// Minor units, where it applies.
    pub amount: Option<i64>,
    /// The key sent to the provider.
    pub idempotency_key: String,
    /// `started` (no answer recorded yet), `succeeded`, `requires_action`, `declined` or
    /// `failed`.
    pub outcome: String,
    /// Decline code.
    pub code: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// The provider's id.
    pub provider_reference: Option<String>,
    /// The saga command that caused it.
    pub command_id: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Records one attempt; returns its id.
pub async fn record(
    conn: &mut PgConnection,
    attempt: &NewAttempt<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO payment_attempts (id, payment_id, operation, amount, idempotency_key, outcome, \
                                       code, detail, provider_reference, command_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(attempt.payment_id)
    .bind(attempt.operation.as_str())
    .bind(attempt.amount)
    .bind(attempt.idempotency_key)
    .bind(attempt.outcome.as_str())
    .bind(attempt.code)
    .bind(attempt.detail)
    .bind(attempt.provider_reference)
    .bind(attempt.command_id)
    .execute(conn)
    .await?;
    Ok(id)
}

/// The attempt under `idempotency_key` that was started but whose answer was never recorded
/// (its command's transaction was lost after the call began), if any.
pub async fn unresolved(
    conn: &mut PgConnection,
    payment_id: Uuid,
    idempotency_key: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM payment_attempts \
         WHERE payment_id = $1 AND idempotency_key = $2 AND outcome = 'started' \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(payment_id)
    .bind(idempotency_key)
    .fetch_optional(conn)
    .await
}

/// Records how a started attempt ended.
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: Outcome,
    code: Option<&str>,
    detail: Option<&str>,
    provider_reference: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payment_attempts SET outcome = $2, code = $3, detail = $4, \
                provider_reference = coalesce($5, provider_reference) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(outcome.as_str())
    .bind(code)
    .bind(detail)
    .bind(provider_reference)
    .execute(conn)
    .await?;
    Ok(())
}

/// A payment's attempts, oldest first.
pub async fn for_payment(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<Attempt>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, operation, amount, idempotency_key, outcome, code, detail, provider_reference, \
                command_id, created_at \
         FROM payment_attempts WHERE payment_id = $1 ORDER BY id",
    )
    .bind(payment_id)
    .fetch_all(conn)
    .await
}

/// The provider's id of the payment's capture (the last that succeeded), which refunds name.
pub async fn capture_reference(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT provider_reference FROM payment_attempts \
         WHERE payment_id = $1 AND operation = 'capture' AND outcome = 'succeeded' \
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(payment_id)
    .fetch_optional(conn)
    .await
    .map(Option::flatten)
}
