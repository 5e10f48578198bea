//! `POST /v1/payments/{id}/challenges/{token}`: the sandbox's 3-D Secure page, answered.

use axum::extract::{Path, State};
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

/// Answers a sandbox 3-D Secure challenge: the action URL of a `payment.requires_action`
/// event. Completing authorizes the payment; abandoning it, or answering after it lapsed
/// (before the sweeper declined it), declines it (`payment_intent_authentication_failure`).
/// The token in the path is the credential: a wrong one is 404, the right one on a challenge
/// already answered or swept is 409.
#[utoipa::path(post, path = "/v1/payments/{id}/challenges/{token}", tag = "payments",
    request_body = ChallengeAnswer,
    params(("id" = Uuid, Path, description = "The payment's id"),
           ("token" = String, Path, description = "The challenge's token, from the action URL")),
    responses((status = 200, body = ChallengeResult),
              (status = 404, body = Problem, description = "No such payment, or not its token"),
              (status = 409, body = Problem, description = "Already answered, or declined when it lapsed"),
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
    let payment = challenge::answer(&mut tx, payment_id, &token, body.outcome).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(Json(ChallengeResult {
        payment_id,
        status: payment.status,
    }))
}
