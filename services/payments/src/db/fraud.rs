//! `fraud_decisions`, and the customer's history the rules read from `payments`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::{
    db::payments::Payment,
    domain::fraud::{Countries, Reason, Rules, Signals, Verdict},
};

/// What the rules need to know of `payment` (its card already looked up): the customer's
/// history before it (their account's, or their email's for a guest) — payments in the
/// velocity window, the run of declines, authorized payments in its currency — the card's
/// other customers, the cards tried from its address, and the countries (`ip_country` from
/// the GeoIP table). One statement: it runs for every authorization.
pub async fn signals(
    conn: &mut PgConnection,
    payment: &Payment,
    ip_country: Option<String>,
) -> Result<Signals, sqlx::Error> {
    // The address counts only when it is a customer's (not ours, not private) and the card
    // is known.
    let address = payment
        .client_ip
        .as_deref()
        .filter(|ip| {
            ip.parse()
                .is_ok_and(crate::domain::fraud::is_customer_address)
        })
        .filter(|_| payment.card_fingerprint.is_some());
    // `mine`: the customer's payments (accounts; emails for guests), this one left out.
    // Customers of a card are accounts, or emails for guests.
    type Row = (i64, Vec<String>, i64, Option<i64>, i64, Option<i64>);
    let (recent, statuses, prior_authorized, average_authorized, card_others, address_others): Row =
        sqlx::query_as(
            "WITH mine AS ( \
                 SELECT created_at, status, currency, amount FROM payments \
                  WHERE id <> $1 \
                    AND (($2::uuid IS NOT NULL AND customer_id = $2) \
                         OR ($2::uuid IS NULL AND customer_id IS NULL AND email = $3))) \
             SELECT (SELECT count(*) FROM mine \
                      WHERE created_at > now() - make_interval(mins => $4)), \
                    ARRAY(SELECT status FROM mine \
                           WHERE status NOT IN ('pending', 'requires_action') \
                           ORDER BY created_at DESC LIMIT 20), \
                    (SELECT count(*) FROM mine WHERE currency = $5 AND status IN \
                        ('authorized', 'partially_captured', 'captured', 'partially_refunded', \
                         'refunded')), \
                    (SELECT avg(amount)::bigint FROM mine WHERE currency = $5 AND status IN \
                        ('authorized', 'partially_captured', 'captured', 'partially_refunded', \
                         'refunded')), \
                    CASE WHEN $6::text IS NULL THEN 0 ELSE \
                        (SELECT count(DISTINCT coalesce(customer_id::text, email)) FROM payments \
                          WHERE card_fingerprint = $6 AND id <> $1 \
                            AND created_at > now() - make_interval(hours => $7) \
                            AND coalesce(customer_id::text, email) <> coalesce($2::uuid::text, $3)) \
                    END, \
                    CASE WHEN $8::text IS NULL THEN NULL ELSE \
                        (SELECT count(DISTINCT card_fingerprint) FROM payments \
                          WHERE client_ip = $8 AND id <> $1 AND card_fingerprint IS NOT NULL \
                            AND card_fingerprint <> $6 \
                            AND created_at > now() - make_interval(mins => $9)) \
                    END",
        )
        .bind(payment.id)
        .bind(payment.customer_id)
        .bind(&payment.email)
        .bind(i32::try_from(Rules::VELOCITY_WINDOW_MINUTES).unwrap_or(i32::MAX))
        .bind(payment.currency.as_str())
        .bind(&payment.card_fingerprint)
        .bind(i32::try_from(Rules::CARD_WINDOW_HOURS).unwrap_or(i32::MAX))
        .bind(address)
        .bind(i32::try_from(Rules::ADDRESS_WINDOW_MINUTES).unwrap_or(i32::MAX))
        .fetch_one(&mut *conn)
        .await?;
    let consecutive_declines = statuses.iter().take_while(|s| *s == "declined").count() as i64;
    let mut signals = Signals {
        recent,
        consecutive_declines,
        prior_authorized,
        average_authorized,
        card_other_customers: card_others,
        ..Signals::default()
    };
    if let Some(others) = address_others {
        signals.address_cards = others + 1;
    }
    signals.countries = Countries {
        card: payment.card_country.clone(),
        billing: payment.billing_country.clone(),
        ip: ip_country,
    };
    Ok(signals)
}

/// Records payment `id`'s decision (once: a repeated authorize keeps the first).
pub async fn record(
    conn: &mut PgConnection,
    id: Uuid,
    verdict: Verdict,
    reasons: &[Reason],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO fraud_decisions (payment_id, verdict, reasons) VALUES ($1, $2, $3) \
         ON CONFLICT (payment_id) DO NOTHING",
    )
    .bind(id)
    .bind(verdict)
    .bind(Json(reasons))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A decision as admins see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Decision {
    /// The payment.
    pub payment_id: Uuid,
    /// Its order.
    pub order_id: Uuid,
    /// What the rules said.
    pub verdict: Verdict,
    /// Why.
    #[schema(value_type = Vec<Reason>)]
    pub reasons: Json<Vec<Reason>>,
    /// For reviews: `approved` or `rejected`, once decided.
    pub review_outcome: Option<String>,
    /// Who decided.
    pub reviewed_by: Option<String>,
    /// Their note.
    pub review_note: Option<String>,
    /// When.
    pub reviewed_at: Option<DateTime<Utc>>,
    /// When the rules ran.
    pub created_at: DateTime<Utc>,
}

const DECISION: &str = "SELECT d.payment_id, p.order_id, d.verdict, d.reasons, d.review_outcome, \
     d.reviewed_by, d.review_note, d.reviewed_at, d.created_at \
     FROM fraud_decisions d JOIN payments p ON p.id = d.payment_id";

/// Reviews waiting for an admin (or all of them with `decided`), oldest first, at most 100.
pub async fn reviews(conn: &mut PgConnection, decided: bool) -> Result<Vec<Decision>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DECISION} WHERE d.verdict = 'review' AND (d.review_outcome IS NULL OR $1) \
         ORDER BY d.created_at LIMIT 100"
    )))
    .bind(decided)
    .fetch_all(&mut *conn)
    .await
}

/// Payment `id`'s decision.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Decision>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DECISION} WHERE d.payment_id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
}

/// Records an admin's decision on an open review; `false` when there is none open.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: &str,
    by: &str,
    note: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE fraud_decisions SET review_outcome = $2, reviewed_by = $3, review_note = $4, \
                reviewed_at = now() \
         WHERE payment_id = $1 AND verdict = 'review' AND review_outcome IS NULL",
    )
    .bind(id)
    .bind(outcome)
    .bind(by)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
