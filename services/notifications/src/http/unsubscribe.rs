//! `/v1/notifications/unsubscribe?token=…`: the link in every non-critical message. Works
//! without signing in (the token is signed). `POST` is RFC 8058's one-click unsubscribe (what
//! mail clients send for `List-Unsubscribe-Post`); `GET` only shows a page with a button that
//! posts, because link scanners follow `GET`s and must not unsubscribe anyone.

use axum::{
    extract::{Query, State},
    response::Html,
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json};

use super::AppState;
use crate::{category::Category, error::Error, preferences, unsubscribe::Unsubscribe};

/// The link's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TokenQuery {
    /// The signed token from the message.
    pub token: Option<String>,
}

/// What was done.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Unsubscribed {
    /// The category left.
    pub category: Category,
    /// Always true: repeating the request changes nothing.
    pub unsubscribed: bool,
}

fn verify(state: &AppState, query: &TokenQuery) -> Result<Unsubscribe, Error> {
    query
        .token
        .as_deref()
        .and_then(|t| state.signer.verify(t))
        .ok_or(Error::BadToken)
}

/// A page confirming the unsubscribe, with a button that posts it.
#[utoipa::path(get, path = "/v1/notifications/unsubscribe", tag = "unsubscribe",
    params(TokenQuery),
    responses((status = 200, content_type = "text/html", body = String),
              (status = 400, body = Problem)))]
pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Html<String>, Error> {
    let unsubscribe = verify(&state, &query)?;
    // The token is URL-safe base64 with one dot: nothing to escape.
    let token = query.token.unwrap_or_default();
    Ok(Html(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"?token={token}\">\
         <p>Stop receiving {} messages?</p>\
         <button type=\"submit\" name=\"List-Unsubscribe\" value=\"One-Click\">Unsubscribe</button>\
         </form></body></html>",
        unsubscribe.category.as_str()
    )))
}

/// One-click unsubscribe (RFC 8058): the token's recipient stops getting its category.
/// Idempotent.
#[utoipa::path(post, path = "/v1/notifications/unsubscribe", tag = "unsubscribe",
    params(TokenQuery),
    responses((status = 200, body = Unsubscribed), (status = 400, body = Problem)))]
pub async fn one_click(
    State(state): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Json<Unsubscribed>, Error> {
    let unsubscribe = verify(&state, &query)?;
    let mut conn = state.db.acquire().await?;
    preferences::opt_out(&mut conn, &unsubscribe.subject, unsubscribe.category).await?;
    tracing::info!(
        category = unsubscribe.category.as_str(),
        "unsubscribed by link"
    );
    Ok(Json(Unsubscribed {
        category: unsubscribe.category,
        unsubscribed: true,
    }))
}
