//! `POST /v1/webhooks/{provider}`: a provider's events, verified, stored once, answered at
//! once (see [`crate::webhooks`]).

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
};
use chrono::Utc;
use serde::Serialize;
use tienda_kit::{Problem, json::Json};

use super::AppState;
use crate::{error::Error, webhooks};

/// The answer to a webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    /// Always true: the event is stored and will be processed.
    pub received: bool,
    /// The event was delivered before (it changed nothing this time).
    pub duplicate: bool,
}

/// Receives a provider's webhook. The signature (`Stripe-Signature`) is checked on the raw
/// body against every configured secret, with a timestamp tolerance; the event is stored
/// once by its id and processed after the answer, against the provider's current state (so
/// events may come late, twice or out of order).
#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "webhooks",
    request_body(content = String, content_type = "application/json",
                 description = "The provider's event, exactly as sent (the signature covers these bytes)"),
    params(("provider" = String, Path, description = "`stripe`"),
           ("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<HMAC-SHA256 hex>")),
    responses((status = 200, body = WebhookReceipt),
              (status = 400, body = Problem, description = "Bad or stale signature, or not an event"),
              (status = 404, body = Problem, description = "No such provider takes webhooks here")))]
pub async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, Problem> {
    let Some((name, secrets)) = state.webhook_secrets.get_key_value(provider.as_str()) else {
        return Err(Error::NotFound(format!(
            "No webhooks are taken for provider {provider:?} here (configured: {}).",
            state
                .webhook_secrets
                .keys()
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(e) = secrets.verify(signature, &body, Utc::now()) {
        tracing::warn!(provider = %name, error = %e, "webhook refused");
        return Err(Problem::bad_request(format!(
            "{e}. Check that STRIPE_WEBHOOK_SECRETS holds this endpoint's signing secret and \
             that the sender's clock is right."
        ))
        .with_field("Stripe-Signature", e.to_string()));
    }
    let payload: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    let head: webhooks::EventHead = serde_json::from_value(payload.clone()).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not a {name} event (id, type, data.object): {e}"
        ))
    })?;
    let new = webhooks::store(&state.db, name, &head, &payload)
        .await
        .map_err(Error::from)?;
    if new {
        state.webhook_wake.notify_one();
        // A refund that changed is asked about now rather than at its next check.
        if let (Some("refund"), Some(id)) = (
            head.data.object.object.as_deref(),
            head.data.object.id.as_deref(),
        ) && crate::db::refunds::check_now(
            &mut *state.db.acquire().await.map_err(Error::from)?,
            id,
        )
        .await
        .map_err(Error::from)?
        {
            state.refund_wake.notify_one();
        }
    } else {
        tracing::info!(provider = %name, event_id = %head.id, "duplicate webhook ignored");
    }
    Ok(Json(WebhookReceipt {
        received: true,
        duplicate: !new,
    }))
}
