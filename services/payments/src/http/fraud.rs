//! Fraud reviews (admins): the payments the rules held for review, and the admin's decision.

use axum::{
    Extension,
    extract::{Path, Query, State},
};
use serde::{Deserialize, Serialize};
use tienda_events::{Envelope, payment::PaymentReviewRejected};
use tienda_kit::{Problem, json::Json, jwt::Claims, outbox};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::{
    db::{
        fraud::{self, Decision},
        payments,
    },
    error::Error,
};

/// `GET /v1/payments/fraud-reviews` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// `true`: decided reviews too (default: only those waiting).
    #[serde(default)]
    pub decided: bool,
}

/// Reviews, oldest first (at most 100).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewList {
    /// The decisions held for review.
    pub items: Vec<Decision>,
}

/// `POST /v1/payments/{id}/review`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    /// `approved` (ship it) or `rejected` (`payment.review_rejected` is published and
    /// orders cancels the order as an admin would: the payment is voided, or refunded if
    /// already captured, and the stock put back).
    pub outcome: String,
    /// Why, at most 500 characters.
    #[serde(default)]
    pub note: Option<String>,
}

/// The payments the fraud rules held for review (admins).
#[utoipa::path(get, path = "/v1/payments/fraud-reviews", tag = "fraud", params(ReviewQuery),
    responses((status = 200, body = ReviewList), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn reviews(
    State(state): State<AppState>,
    query: Result<Query<ReviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReviewList>, Problem> {
    let Query(query) = query.map_err(|e| Problem::validation(e.body_text()))?;
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let items = fraud::reviews(&mut conn, query.decided)
        .await
        .map_err(Error::from)?;
    Ok(Json(ReviewList { items }))
}

/// Decides a payment held for review (admins): recorded with who decided and why.
#[utoipa::path(post, path = "/v1/payments/{id}/review", tag = "fraud", request_body = ReviewDecision,
    params(("id" = Uuid, Path, description = "The payment's id")),
    responses((status = 200, body = Decision), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 404, body = Problem, description = "No such payment, or it was not held for review"),
              (status = 409, body = Problem, description = "Decided before"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn decide(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path(id): Path<String>,
    Json(decision): Json<ReviewDecision>,
) -> Result<Json<Decision>, Error> {
    let not_found = || Error::NotFound(format!("No payment {id} held for review."));
    let id = Uuid::try_parse(&id).map_err(|_| not_found())?;
    let mut fields = Vec::new();
    if !matches!(decision.outcome.as_str(), "approved" | "rejected") {
        fields.push((
            "outcome".to_owned(),
            "must be approved or rejected".to_owned(),
        ));
    }
    let note = decision
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > 500 || n.chars().any(char::is_control)) {
        fields.push((
            "note".to_owned(),
            "must be at most 500 characters, without control characters".to_owned(),
        ));
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let mut tx = state.db.begin().await?;
    let current = fraud::get(&mut tx, id).await?.ok_or_else(not_found)?;
    if current.verdict != crate::domain::fraud::Verdict::Review {
        return Err(not_found());
    }
    if !fraud::decide(&mut tx, id, &decision.outcome, &admin.sub, note).await? {
        return Err(Error::Conflict(format!(
            "Payment {id}'s review was decided before ({}).",
            current.review_outcome.unwrap_or_default()
        )));
    }
    let decided = fraud::get(&mut tx, id).await?.ok_or_else(not_found)?;
    if decision.outcome == "rejected" {
        let payment = payments::get(&mut tx, id).await?.ok_or_else(not_found)?;
        let rejected = PaymentReviewRejected {
            payment_id: id,
            order_id: payment.order_id,
            reviewed_by: admin.sub.clone(),
            note: note.map(str::to_owned),
        };
        let envelope = Envelope {
            correlation_id: payment.correlation_id,
            causation_id: Some(payment.authorize_command_id),
            ..Envelope::new(crate::SOURCE, rejected)
        };
        outbox::enqueue(&mut tx, envelope).await?;
    }
    tx.commit().await?;
    tracing::info!(payment_id = %id, outcome = %decision.outcome, by = %admin.sub, "fraud review decided");
    Ok(Json(decided))
}
