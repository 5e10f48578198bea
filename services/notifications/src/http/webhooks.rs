//! `/v1/notifications/webhooks` (admins): endpoints of shop integrations and their secrets.
//! Their deliveries are searched like any other
//! (`GET /v1/notifications/deliveries?recipient=<endpoint id>`).

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    error::Error,
    webhooks::{self, EVENT_TYPES, Endpoint},
};

/// `POST /v1/notifications/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// The event types it gets (`order.shipped`, `payment.refunded`, …).
    pub event_types: Vec<String>,
    /// What it is for, at most 200 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// An endpoint with its signing secret (shown when created and when rotated).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_…`: verify `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

/// Endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// Newest first.
    pub items: Vec<Endpoint>,
}

const ENDPOINT: &str = "id, url, event_types, description, active, disabled_reason, created_by, \
     created_at";

async fn find(conn: &mut sqlx::PgConnection, id: &str) -> Result<Endpoint, Error> {
    let not_found = || Error::NotFound(format!("No webhook endpoint {id}."));
    let id = Uuid::try_parse(id).map_err(|_| not_found())?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(not_found)
}

/// Registers an endpoint (admins); its secret is in the answer.
#[utoipa::path(post, path = "/v1/notifications/webhooks", tag = "webhooks",
    request_body = NewEndpoint,
    responses((status = 201, body = EndpointWithSecret), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 422, body = Problem, description = "A bad URL or event type")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Json(new): Json<NewEndpoint>,
) -> Result<(StatusCode, Json<EndpointWithSecret>), Error> {
    let mut errors = Vec::new();
    if let Some(why) = webhooks::check_url(&new.url) {
        errors.push(("url".to_owned(), why));
    }
    if new.event_types.is_empty() {
        errors.push((
            "event_types".to_owned(),
            "must name at least one".to_owned(),
        ));
    }
    for (i, t) in new.event_types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            errors.push((
                format!("event_types[{i}]"),
                format!("must be one of {}", EVENT_TYPES.join(", ")),
            ));
        }
    }
    let description = new
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if description.is_some_and(|d| d.chars().count() > 200 || d.chars().any(char::is_control)) {
        errors.push((
            "description".to_owned(),
            "must be at most 200 characters, without control characters".to_owned(),
        ));
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut types = new.event_types.clone();
    types.sort();
    types.dedup();
    let secret = webhooks::new_secret();
    let id = Uuid::now_v7();
    let mut conn = state.db.acquire().await?;
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, event_types, description, secret, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(new.url.trim())
    .bind(&types)
    .bind(description)
    .bind(&secret)
    .bind(&admin.sub)
    .execute(&mut *conn)
    .await?;
    let endpoint = find(&mut conn, &id.to_string()).await?;
    tracing::info!(endpoint = %id, by = %admin.sub, "webhook endpoint registered");
    Ok((
        StatusCode::CREATED,
        Json(EndpointWithSecret { endpoint, secret }),
    ))
}

/// Endpoints, newest first (admins).
#[utoipa::path(get, path = "/v1/notifications/webhooks", tag = "webhooks",
    responses((status = 200, body = EndpointList), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<EndpointList>, Error> {
    let items = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT} FROM webhook_endpoints ORDER BY id DESC LIMIT 500"
    )))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(EndpointList { items }))
}

/// One endpoint (admins).
#[utoipa::path(get, path = "/v1/notifications/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, body = Endpoint), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(find(&mut conn, &id).await?))
}

/// Stops an endpoint (admins): it gets no new events, and its queued deliveries fail.
#[utoipa::path(delete, path = "/v1/notifications/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Disabled"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let mut conn = state.db.acquire().await?;
    let endpoint = find(&mut conn, &id).await?;
    sqlx::query(
        "UPDATE webhook_endpoints SET active = false, updated_at = now(),
                disabled_reason = 'disabled by ' || $2
         WHERE id = $1",
    )
    .bind(endpoint.id)
    .bind(&admin.sub)
    .execute(&mut *conn)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces an endpoint's secret (admins); the old one stops signing at once.
#[utoipa::path(post, path = "/v1/notifications/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, body = EndpointWithSecret), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EndpointWithSecret>, Error> {
    let mut conn = state.db.acquire().await?;
    let endpoint = find(&mut conn, &id).await?;
    let secret = webhooks::new_secret();
    sqlx::query("UPDATE webhook_endpoints SET secret = $2, updated_at = now() WHERE id = $1")
        .bind(endpoint.id)
        .bind(&secret)
        .execute(&mut *conn)
        .await?;
    Ok(Json(EndpointWithSecret { endpoint, secret }))
}
