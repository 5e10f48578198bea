//! The `payments` table.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tienda_events::money::{Currency, Money};
use uuid::Uuid;

use crate::domain::payment::PaymentStatus;

/// A payment as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Payment {
    /// Chosen by orders.
    pub id: Uuid,
    /// The order it pays for.
    pub order_id: Uuid,
    /// The customer (absent for guests).
    pub customer_id: Option<Uuid>,
    /// The customer's address.
    pub email: String,
    /// Which provider holds it.
    pub provider: String,
    /// The provider's id of the authorization.
    pub provider_reference: Option<String>,
    /// The provider token of the payment method.
    pub payment_method: String,
    /// Its currency.
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// Authorized (asked for), minor units.
    pub amount: i64,
    /// Captured, minor units.
    pub captured: i64,
    /// Refunded, minor units.
    pub refunded: i64,
    /// Where it is.
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    /// Why it was declined.
    pub decline_code: Option<String>,
    /// The decline as the customer is told.
    pub decline_message: Option<String>,
    /// The last provider failure.
    pub failure: Option<String>,
    /// SHA-256 of the 3-D Secure challenge's token (the token itself is never stored); kept
    /// after the answer so a second answer is told the challenge was already answered.
    pub challenge_token_sha256: Option<Vec<u8>>,
    /// When an unanswered challenge lapses.
    pub challenge_expires_at: Option<DateTime<Utc>>,
    /// The saga's correlation id (from the authorize command).
    pub correlation_id: Uuid,
    /// The authorize command's envelope id.
    pub authorize_command_id: Uuid,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The address the checkout came from.
    pub client_ip: Option<String>,
    /// The billing address's country.
    pub billing_country: Option<String>,
    /// The provider's fingerprint of the card (one per card number, whatever the token).
    pub card_fingerprint: Option<String>,
    /// The card issuer's country.
    pub card_country: Option<String>,
}

impl Payment {
    /// `minor` in the payment's currency.
    pub fn money(&self, minor: i64) -> Money {
        Money {
            amount: minor,
            currency: self.currency,
        }
    }
}

/// A payment about to be authorized.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    /// Chosen by orders.
    pub id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The customer.
    pub customer_id: Option<Uuid>,
    /// The customer's address.
    pub email: &'a str,
    /// The provider it goes to.
    pub provider: &'a str,
    /// The provider token.
    pub payment_method: &'a str,
    /// What to authorize.
    pub amount: Money,
    /// The saga's correlation id.
    pub correlation_id: Uuid,
    /// The authorize command's id.
    pub authorize_command_id: Uuid,
    /// The address the checkout came from (a well-formed IP address, or nothing).
    pub client_ip: Option<String>,
    /// The billing address's country (two capital letters, or nothing).
    pub billing_country: Option<String>,
}

/// Serializes everything done to one payment (commands and challenge answers) until the
/// transaction ends, also before its row exists.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payment'), hashtext($1::text))")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One payment.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM payments WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Records a payment as `pending`.
pub async fn insert(conn: &mut PgConnection, new: &NewPayment<'_>) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO payments (id, order_id, customer_id, email, provider, payment_method, currency, \
                               amount, status, correlation_id, authorize_command_id, client_ip, \
                               billing_country) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12) RETURNING *",
    )
    .bind(new.id)
    .bind(new.order_id)
    .bind(new.customer_id)
    .bind(new.email)
    .bind(new.provider)
    .bind(new.payment_method)
    .bind(new.amount.currency.as_str())
    .bind(new.amount.amount)
    .bind(new.correlation_id)
    .bind(new.authorize_command_id)
    .bind(&new.client_ip)
    .bind(&new.billing_country)
    .fetch_one(conn)
    .await
}

/// Records what the provider said of the payment's card.
pub async fn set_card(
    conn: &mut PgConnection,
    id: Uuid,
    fingerprint: &str,
    country: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments SET card_fingerprint = $2, card_country = $3 WHERE id = $1")
        .bind(id)
        .bind(fingerprint)
        .bind(country)
        .execute(conn)
        .await?;
    Ok(())
}

/// What the provider said to an authorization (or a challenge).
#[derive(Debug, Clone, Default)]
pub struct Authorization<'a> {
    /// The provider's id of the authorization.
    pub reference: Option<&'a str>,
    /// The decline, when declined.
    pub decline: Option<(&'a str, &'a str)>,
    /// The failure, when it failed.
    pub failure: Option<&'a str>,
    /// An open challenge's token digest (SHA-256) and deadline.
    pub challenge: Option<(&'a [u8], DateTime<Utc>)>,
}

/// Stores the outcome of an authorization or of its challenge.
pub async fn set_authorization(
    conn: &mut PgConnection,
    id: Uuid,
    status: PaymentStatus,
    outcome: &Authorization<'_>,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(
        "UPDATE payments SET status = $2, provider_reference = coalesce($3, provider_reference), \
                decline_code = $4, decline_message = $5, failure = $6, \
                challenge_token_sha256 = coalesce($7, challenge_token_sha256), \
                challenge_expires_at = coalesce($8, challenge_expires_at), \
                updated_at = now() \
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(outcome.reference)
    .bind(outcome.decline.map(|d| d.0))
    .bind(outcome.decline.map(|d| d.1))
    .bind(outcome.failure)
    .bind(outcome.challenge.map(|c| c.0))
    .bind(outcome.challenge.map(|c| c.1))
    .fetch_one(conn)
    .await
}

/// Moves a payment to `status` with the given captured and refunded totals.
pub async fn set_totals(
    conn: &mut PgConnection,
    id: Uuid,
    status: PaymentStatus,
    captured: i64,
    refunded: i64,
) -> Result<Payment, sqlx::Error> {
    sqlx::query_as(
        "UPDATE payments SET status = $2, captured = $3, refunded = $4, failure = NULL, \
                updated_at = now() \
         WHERE id = $1 RETURNING *",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(captured)
    .bind(refunded)
    .fetch_one(conn)
    .await
}

/// Replaces an open challenge's token digest (a repeated authorize command is given a new
/// action URL: the old token is not stored, so its URL cannot be rebuilt).
pub async fn set_challenge_token(
    conn: &mut PgConnection,
    id: Uuid,
    digest: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payments SET challenge_token_sha256 = $2, updated_at = now() \
         WHERE id = $1 AND status = 'requires_action'",
    )
    .bind(id)
    .bind(digest)
    .execute(conn)
    .await?;
    Ok(())
}

/// Payments whose 3-D Secure challenge lapsed unanswered, oldest deadline first.
pub async fn lapsed_challenges(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM payments \
         WHERE status = 'requires_action' AND challenge_expires_at < $1 \
         ORDER BY challenge_expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Notes a provider failure that left the state as it was.
pub async fn set_failure(
    conn: &mut PgConnection,
    id: Uuid,
    failure: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payments SET failure = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(failure)
        .execute(conn)
        .await?;
    Ok(())
}

/// A page of payments in creation order, of one order or all, after `after`.
pub async fn list(
    conn: &mut PgConnection,
    order_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM payments \
         WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR id > $2) \
         ORDER BY id LIMIT $3",
    )
    .bind(order_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}
