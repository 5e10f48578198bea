//! `GET /v1/payments/analytics` (admins): volume, success rate, declines and refunds by day,
//! provider and currency, computed from the payments ledger itself, so it is exact and
//! survives restarts (Prometheus counters of the same outcomes are still to come).

use axum::extract::{Query, State, rejection::QueryRejection};
use chrono::{Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tienda_events::Money;
use tienda_kit::{Problem, json::Json};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::{challenge::ABANDONED_CODE, error::Error};

/// Longest window, in days.
pub const MAX_DAYS: i64 = 366;

/// `GET /v1/payments/analytics` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// First day (UTC, `2026-12-01`); default 30 days before `to`.
    pub from: Option<NaiveDate>,
    /// Last day, included (UTC); default today.
    pub to: Option<NaiveDate>,
}

/// One day, provider and currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    /// The day (UTC).
    pub day: NaiveDate,
    /// The provider.
    pub provider: String,
    /// Payments created that day.
    pub attempted: i64,
    /// Of them, authorized (whatever happened after: captured, refunded, voided).
    pub authorized: i64,
    /// Declined by the provider, the bank or the fraud rules.
    pub declined: i64,
    /// 3-D Secure challenges the customer abandoned (kept apart from declines).
    pub abandoned_challenges: i64,
    /// The provider failed (nothing held).
    pub failed: i64,
    /// Still waiting (pending or a challenge open).
    pub open: i64,
    /// `authorized / (attempted - abandoned_challenges - open)`; absent with nothing decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Authorized amount.
    pub authorized_amount: Money,
    /// Captured amount.
    pub captured_amount: Money,
    /// Refunded amount (of these payments).
    pub refunded_amount: Money,
}

/// A decline code and how often it came.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeclineReason {
    /// The code (`card_declined`, `insufficient_funds`, `fraud_blocked`, ...).
    pub code: String,
    /// How many.
    pub count: i64,
}

/// The report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Analytics {
    /// First day.
    pub from: NaiveDate,
    /// Last day (included).
    pub to: NaiveDate,
    /// By day, provider and currency, oldest first.
    pub days: Vec<Bucket>,
    /// Declines by code over the window, most frequent first (abandoned challenges apart).
    pub decline_reasons: Vec<DeclineReason>,
}

type Row = (
    NaiveDate,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// Payments by day, provider and currency over a window (admins).
#[utoipa::path(get, path = "/v1/payments/analytics", tag = "payments", params(Window),
    responses((status = 200, body = Analytics), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn analytics(
    State(state): State<AppState>,
    window: Result<Query<Window>, QueryRejection>,
) -> Result<Json<Analytics>, Problem> {
    let Query(window) = window.map_err(|e| Problem::validation(e.body_text()))?;
    let to = window.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = window.from.unwrap_or(to - Duration::days(29));
    if from > to || (to - from).num_days() >= MAX_DAYS {
        return Err(Error::Invalid(vec![(
            "from".into(),
            format!("must be on or before to, at most {MAX_DAYS} days before it"),
        )])
        .into());
    }
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, provider, currency,
                count(*),
                count(*) FILTER (WHERE status IN ('authorized', 'partially_captured', 'captured',
                                                  'partially_refunded', 'refunded', 'voided')),
                count(*) FILTER (WHERE status = 'declined' AND decline_code IS DISTINCT FROM $3),
                count(*) FILTER (WHERE status = 'declined' AND decline_code = $3),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status IN ('pending', 'requires_action')),
                COALESCE(sum(amount) FILTER (WHERE status IN ('authorized', 'partially_captured',
                    'captured', 'partially_refunded', 'refunded', 'voided')), 0)::bigint,
                COALESCE(sum(captured), 0)::bigint,
                COALESCE(sum(refunded), 0)::bigint
           FROM payments
          WHERE created_at >= $1::date AND created_at < ($2::date + 1)
          GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .bind(from)
    .bind(to)
    .bind(ABANDONED_CODE)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        let (
            day,
            provider,
            currency,
            attempted,
            authorized,
            declined,
            abandoned,
            failed,
            open,
            auth_amount,
            captured,
            refunded,
        ) = row;
        let currency = currency
            .parse()
            .map_err(|_| Error::Database(sqlx::Error::Decode("a stored currency".into())))?;
        let money = |amount| Money { amount, currency };
        let decided = attempted - abandoned - open;
        days.push(Bucket {
            day,
            provider,
            attempted,
            authorized,
            declined,
            abandoned_challenges: abandoned,
            failed,
            open,
            success_rate: (decided > 0).then(|| authorized as f64 / decided as f64),
            authorized_amount: money(auth_amount),
            captured_amount: money(captured),
            refunded_amount: money(refunded),
        });
    }
    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "SELECT decline_code, count(*) FROM payments
          WHERE status = 'declined' AND decline_code IS NOT NULL AND decline_code <> $3
            AND created_at >= $1::date AND created_at < ($2::date + 1)
          GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .bind(from)
    .bind(to)
    .bind(ABANDONED_CODE)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    Ok(Json(Analytics {
        from,
        to,
        days,
        decline_reasons: reasons
            .into_iter()
            .map(|(code, count)| DeclineReason { code, count })
            .collect(),
    }))
}
