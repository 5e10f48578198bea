//! The mail provider's signed callbacks, and the suppression list (admins).

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use crate::{
    error::Error,
    tracking::{self, Applied, Callback, Suppression},
};

/// What a callback did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackReceipt {
    /// `applied`, `duplicate` or `unknown_message`.
    pub outcome: Applied,
}

/// Takes a provider's callback about a message (`delivered`, `bounced`, `complained`),
/// signed with the Standard Webhooks scheme; applied once per `webhook-id`. A hard bounce or
/// a complaint suppresses the address.
#[utoipa::path(post, path = "/v1/notifications/callbacks/{channel}", tag = "tracking",
    request_body(content = Callback, description = "The event, exactly as signed"),
    params(("channel" = String, Path, description = "`email`"),
           ("webhook-id" = String, Header, description = "The event's id (deduplication)"),
           ("webhook-timestamp" = String, Header, description = "Unix seconds, within 5 minutes"),
           ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256>`, space-separated when several")),
    responses((status = 200, body = CallbackReceipt),
              (status = 400, body = Problem, description = "Bad or stale signature, or not a callback"),
              (status = 404, body = Problem, description = "No callbacks are taken for this channel")))]
pub async fn callback(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CallbackReceipt>, Problem> {
    if channel != "email" || state.callback_secrets.0.is_empty() {
        return Err(Error::NotFound(format!(
            "No callbacks are taken for channel {channel:?} here: set \
             NOTIFICATIONS_CALLBACK_SECRETS to the provider's signing secret."
        ))
        .into());
    }
    // Any configured secret will do (rotation); the crate checks the timestamp's tolerance.
    let verified = state
        .callback_secrets
        .0
        .iter()
        .any(|secret| secret.verify(&body, &headers).is_ok());
    if !verified {
        tracing::warn!(%channel, "callback refused: bad signature");
        return Err(Error::BadSignature(
            "The webhook-signature does not verify (or webhook-timestamp is more than 5 \
             minutes off): check NOTIFICATIONS_CALLBACK_SECRETS against the provider's signing \
             secret and the sender's clock."
                .into(),
        )
        .into());
    }
    let event_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let callback: Callback = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not a callback ({{\"type\", \"message_id\", \"bounce\", \"detail\"}}): {e}"
        ))
    })?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let outcome = tracking::apply(&mut tx, &channel, &event_id, &callback)
        .await
        .map_err(Error::from)?;
    tx.commit().await.map_err(Error::from)?;
    Ok(Json(CallbackReceipt { outcome }))
}

/// `GET /v1/notifications/suppressions` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuppressionQuery {
    /// One address (any case).
    pub recipient: Option<String>,
}

/// Suppressed addresses.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionList {
    /// Newest first, at most 100.
    pub items: Vec<Suppression>,
}

/// Addresses nothing is sent to (admins).
#[utoipa::path(get, path = "/v1/notifications/suppressions", tag = "tracking",
    params(SuppressionQuery),
    responses((status = 200, body = SuppressionList), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn suppressions(
    State(state): State<AppState>,
    query: Result<Query<SuppressionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SuppressionList>, Problem> {
    let Query(query) = query.map_err(|e| Problem::validation(e.body_text()))?;
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let items = tracking::suppressions(&mut conn, query.recipient.as_deref())
        .await
        .map_err(Error::from)?;
    Ok(Json(SuppressionList { items }))
}

/// Lifts a suppression (admins): the address gets messages again.
#[utoipa::path(delete, path = "/v1/notifications/suppressions/{channel}/{recipient}",
    tag = "tracking",
    params(("channel" = String, Path, description = "`email`"),
           ("recipient" = String, Path, description = "The address")),
    responses((status = 204, description = "Lifted"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn lift(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path((channel, recipient)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let mut conn = state.db.acquire().await?;
    if !tracking::lift(&mut conn, &channel, &recipient).await? {
        return Err(Error::NotFound(format!(
            "{recipient} is not suppressed on {channel}."
        )));
    }
    tracing::info!(%channel, by = %admin.sub, "suppression lifted");
    Ok(StatusCode::NO_CONTENT)
}
