//! `/v1/payments`: admins list an order's payments and read one with its attempts and refunds.

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tienda_events::money::Money;
use tienda_kit::{Problem, json::Json};
use uuid::Uuid;

use super::AppState;
use crate::{
    db::{
        attempts::{self, Attempt},
        payments::{self, Payment},
        refunds::{self, Refund},
    },
    domain::payment::PaymentStatus,
    error::Error,
};

/// Why a payment was declined.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Decline {
    /// Stripe's decline code (`card_declined`, `insufficient_funds`, ...).
    pub code: String,
    /// The sentence the customer was shown.
    pub message: String,
}

/// A payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    /// Chosen by orders (UUIDv7).
    pub id: Uuid,
    /// The order it pays for.
    pub order_id: Uuid,
    /// The customer; absent for guests.
    pub customer_id: Option<Uuid>,
    /// The customer's address.
    pub email: String,
    /// `sandbox`.
    pub provider: String,
    /// The provider's id of the authorization.
    pub provider_reference: Option<String>,
    /// The provider token of the payment method.
    pub payment_method: String,
    /// Where it is.
    pub status: PaymentStatus,
    /// Authorized.
    pub amount: Money,
    /// Captured so far.
    pub captured: Money,
    /// Refunded so far.
    pub refunded: Money,
    /// Why it was declined.
    pub decline: Option<Decline>,
    /// The last provider failure.
    pub failure: Option<String>,
    /// When an open 3-D Secure challenge lapses.
    pub challenge_expires_at: Option<DateTime<Utc>>,
    /// Recorded.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        let decline = match (&p.decline_code, &p.decline_message) {
            (Some(code), message) => Some(Decline {
                code: code.clone(),
                message: message.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        Self {
            amount: p.money(p.amount),
            captured: p.money(p.captured),
            refunded: p.money(p.refunded),
            decline,
            id: p.id,
            order_id: p.order_id,
            customer_id: p.customer_id,
            email: p.email,
            provider: p.provider,
            provider_reference: p.provider_reference,
            payment_method: p.payment_method,
            status: p.status,
            failure: p.failure,
            challenge_expires_at: p
                .challenge_expires_at
                .filter(|_| p.status == PaymentStatus::RequiresAction),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// One call to the provider (or a challenge answer).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// Its id.
    pub id: Uuid,
    /// `authorize`, `challenge`, `capture`, `void` or `refund`.
    pub operation: String,
    /// How much, where it applies.
    pub amount: Option<Money>,
    /// The key sent to the provider.
    pub idempotency_key: String,
    /// `succeeded`, `requires_action`, `declined` or `failed`.
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

/// A refund.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefundView {
    /// Chosen by orders.
    pub id: Uuid,
    /// This refund.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// `succeeded` or `refused`.
    pub status: String,
    /// Refunded of the payment after it.
    pub refunded_total: Money,
    /// Why it was refused.
    pub failure: Option<String>,
    /// The provider's id of the refund.
    pub provider_reference: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A payment with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentDetail {
    /// The payment.
    #[serde(flatten)]
    pub payment: PaymentView,
    /// Every provider call, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Its refunds (made and refused), oldest first.
    pub refunds: Vec<RefundView>,
}

/// A page of payments.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentPage {
    /// Oldest first.
    pub items: Vec<PaymentView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// The list's query (parsed by hand so every fault is a problem naming the field).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this order's payments.
    pub order_id: Option<Uuid>,
    /// Page size, 1-100 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 100;

impl ListParams {
    fn parse(pairs: &[(String, String)]) -> Result<(Option<Uuid>, i64, Option<Uuid>), Error> {
        let mut fields = Vec::new();
        let (mut order_id, mut limit, mut cursor) = (None, DEFAULT_LIMIT, None);
        for (name, value) in pairs {
            match name.as_str() {
                "order_id" => match value.parse() {
                    Ok(id) => order_id = Some(id),
                    Err(_) => fields.push((name.clone(), "must be a UUID".to_owned())),
                },
                "limit" => match value.parse::<i64>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                    _ => fields.push((name.clone(), format!("must be 1-{MAX_LIMIT}"))),
                },
                "cursor" => match value.parse() {
                    Ok(id) => cursor = Some(id),
                    Err(_) => {
                        fields.push((name.clone(), "is not a cursor this API gave".to_owned()))
                    }
                },
                _ => fields.push((name.clone(), "is not a parameter of this list".to_owned())),
            }
        }
        if fields.is_empty() {
            Ok((order_id, limit, cursor))
        } else {
            Err(Error::Invalid(fields))
        }
    }
}

/// Lists payments (admin), of one order with `order_id`, oldest first, in keyset pages.
#[utoipa::path(get, path = "/v1/payments", tag = "payments", params(ListParams),
    responses((status = 200, body = PaymentPage), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<PaymentPage>, Error> {
    let (order_id, limit, after) = ListParams::parse(&pairs)?;
    let mut conn = state.db.acquire().await?;
    let mut rows = payments::list(&mut conn, order_id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|p| p.id.to_string()))
        .flatten();
    Ok(Json(PaymentPage {
        items: rows.into_iter().map(PaymentView::from).collect(),
        next_cursor,
    }))
}

/// One payment (admin) with its attempts and refunds.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "The payment's id")),
    responses((status = 200, body = PaymentDetail), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PaymentDetail>, Error> {
    let not_found = || Error::NotFound(format!("No payment {id}."));
    let uuid: Uuid = id.parse().map_err(|_| not_found())?;
    let mut conn = state.db.acquire().await?;
    let payment = payments::get(&mut conn, uuid)
        .await?
        .ok_or_else(not_found)?;
    let attempts = attempts::for_payment(&mut conn, uuid).await?;
    let refunds = refunds::for_payment(&mut conn, uuid).await?;
    let money = |minor| payment.money(minor);
    let attempts = attempts
        .into_iter()
        .map(|a: Attempt| AttemptView {
            id: a.id,
            operation: a.operation,
            amount: a.amount.map(money),
            idempotency_key: a.idempotency_key,
            outcome: a.outcome,
            code: a.code,
            detail: a.detail,
            provider_reference: a.provider_reference,
            command_id: a.command_id,
            created_at: a.created_at,
        })
        .collect();
    let refunds = refunds
        .into_iter()
        .map(|r: Refund| RefundView {
            id: r.id,
            amount: money(r.amount),
            reason: r.reason,
            status: r.status,
            refunded_total: money(r.refunded_total),
            failure: r.failure,
            provider_reference: r.provider_reference,
            created_at: r.created_at,
        })
        .collect();
    Ok(Json(PaymentDetail {
        payment: payment.into(),
        attempts,
        refunds,
    }))
}
