//! `/v1/payments/{id}/challenges/{token}`: a 3-D Secure challenge, read and answered.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json};
use uuid::Uuid;

use super::AppState;
use crate::{
    challenge::{self, ChallengeOutcome},
    domain::payment::PaymentStatus,
    error::Error,
};

/// The customer's answer to a challenge.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    /// `complete` (passed) or `abandon`.
    pub outcome: ChallengeOutcome,
}

/// Where the payment is after the answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChallengeResult {
    /// The payment.
    pub payment_id: Uuid,
    /// `authorized`, or `declined` (abandoned, or answered after it lapsed).
    pub status: PaymentStatus,
}

/// An open challenge, for the page that shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChallengeView {
    /// The payment.
    pub payment_id: Uuid,
    /// Where the customer authenticates: `sandbox` (answer here) or `stripe` (with Stripe.js).
    pub provider: String,
    /// The amount, in minor units of `currency`.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// When an unanswered challenge is declined.
    pub expires_at: Option<DateTime<Utc>>,
    /// For `stripe`: the PaymentIntent's client secret, for Stripe.js `handleNextAction`.
    /// Then answer `complete` here; Stripe's state, not the answer, decides.
    pub client_secret: Option<String>,
}

/// Reads an open 3-D Secure challenge (the action URL of a `payment.requires_action` event).
/// The token in the path is the credential: a wrong one is 404, the right one on a challenge
/// already answered or swept is 409.
#[utoipa::path(get, path = "/v1/payments/{id}/challenges/{token}", tag = "payments",
    params(("id" = Uuid, Path, description = "The payment's id"),
           ("token" = String, Path, description = "The challenge's token, from the action URL")),
    responses((status = 200, body = ChallengeView),
              (status = 404, body = Problem, description = "No such payment, or not its token"),
              (status = 409, body = Problem, description = "Already answered, or declined when it lapsed"),
              (status = 503, body = Problem, description = "The provider did not answer; retry")))]
pub async fn show(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
) -> Result<Json<ChallengeView>, Problem> {
    let payment_id: Uuid = id
        .parse()
        .map_err(|_| Error::NotFound(format!("No payment {id}.")))?;
    let payment = {
        let mut tx = state.db.begin().await.map_err(Error::from)?;
        let payment = challenge::open_challenge(&mut tx, payment_id, &token).await?;
        tx.commit().await.map_err(Error::from)?;
        payment
    };
    let mut client_secret = None;
    if let Some(provider) = state.providers.get(&payment.provider)
        && provider.challenges_at_provider()
        && let Some(reference) = payment.provider_reference.as_deref()
    {
        let intent = provider
            .retrieve(reference, Utc::now() + chrono::TimeDelta::seconds(10))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        client_secret = intent.client_secret;
    }
    Ok(Json(ChallengeView {
        payment_id,
        provider: payment.provider.clone(),
        amount: payment.amount,
        currency: payment.currency.as_str().to_owned(),
        expires_at: payment.challenge_expires_at,
        client_secret,
    }))
}

/// Answers a 3-D Secure challenge: the action URL of a `payment.requires_action` event. On
/// the sandbox, completing authorizes the payment. With Stripe, the customer authenticates
/// with Stripe.js first and `complete` asks Stripe for the outcome (409 while Stripe is still
/// waiting). Abandoning, or answering after the challenge lapsed (before the sweeper declined
/// it), declines it (`payment_intent_authentication_failure`). The token in the path is the
/// credential: a wrong one is 404, the right one on a challenge already answered or swept is
/// 409.
#[utoipa::path(post, path = "/v1/payments/{id}/challenges/{token}", tag = "payments",
    request_body = ChallengeAnswer,
    params(("id" = Uuid, Path, description = "The payment's id"),
           ("token" = String, Path, description = "The challenge's token, from the action URL")),
    responses((status = 200, body = ChallengeResult),
              (status = 404, body = Problem, description = "No such payment, or not its token"),
              (status = 409, body = Problem, description = "Already answered, or declined when it lapsed"),
              (status = 503, body = Problem, description = "The provider did not answer; retry"),
              (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn answer(
    State(state): State<AppState>,
    Path((id, token)): Path<(String, String)>,
    Json(body): Json<ChallengeAnswer>,
) -> Result<Json<ChallengeResult>, Problem> {
    let payment_id: Uuid = id
        .parse()
        .map_err(|_| Error::NotFound(format!("No payment {id}.")))?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let payment =
        challenge::answer(&mut tx, &state.providers, payment_id, &token, body.outcome).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(Json(ChallengeResult {
        payment_id,
        status: payment.status,
    }))
}
