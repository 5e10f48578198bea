//! Delivery history: `GET /v1/notifications` for the signed-in user's own messages; for
//! admins, search across users, one delivery with its history, and replay of a failed one.
//! Pages are newest first; `cursor` is the last id of the page before (ids are UUIDv7, so
//! they sort by time).

use axum::{
    Extension,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::{deliveries, error::Error};

/// A message as its recipient sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Notification {
    /// The delivery.
    pub id: Uuid,
    /// The message family (`welcome`, `order_shipped`, …).
    pub kind: String,
    /// Its category (`account`, `orders`, `marketing`, …).
    pub category: String,
    /// `email`.
    pub channel: String,
    /// Where it went.
    pub recipient: String,
    /// Its subject.
    pub subject: String,
    /// `queued`, `sent`, `delivered`, `bounced`, `failed` or `suppressed`.
    pub status: String,
    /// Why it is suppressed or bounced.
    pub status_reason: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was handed to the provider.
    pub sent_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A delivery as admins see it: everything but the body.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Delivery {
    /// What the recipient sees.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub notification: Notification,
    /// The user, when known.
    pub user_id: Option<Uuid>,
    /// The event that caused it.
    pub event_id: Uuid,
    /// Its type (`order.shipped`).
    pub event_type: String,
    /// Critical messages go whatever the preferences.
    pub critical: bool,
    /// The locale rendered.
    pub locale: String,
    /// The template version rendered.
    pub template_version: i32,
    /// Attempts so far.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// What the provider answered.
    pub provider_ref: Option<String>,
}

/// One change in a delivery's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct DeliveryEvent {
    /// `queued`, `retrying`, `sent`, `delivered`, `soft_bounce`, `bounced`, `complaint`,
    /// `failed`, `suppressed`.
    pub status: String,
    /// The error, the provider's words, who replayed it.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One delivery with its history, oldest change first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Its history.
    pub events: Vec<DeliveryEvent>,
}

/// A page of the user's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<Uuid>,
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<Uuid>,
}

/// `GET /v1/notifications` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<Uuid>,
}

/// `GET /v1/notifications/deliveries` parameters: every filter given must match.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The address (any case).
    pub recipient: Option<String>,
    /// The user.
    pub user_id: Option<Uuid>,
    /// `queued`, `sent`, `delivered`, `bounced`, `failed` or `suppressed`.
    pub status: Option<String>,
    /// The message family.
    pub kind: Option<String>,
    /// The causing event.
    pub event_id: Option<Uuid>,
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<Uuid>,
}

const STATUSES: [&str; 6] = [
    "queued",
    "sent",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
];

const NOTIFICATION: &str = "id, kind, category, channel, recipient, subject, status, \
     status_reason, created_at, sent_at, updated_at";
const DELIVERY: &str = "id, kind, category, channel, recipient, subject, status, \
     status_reason, created_at, sent_at, updated_at, user_id, event_id, event_type, critical, \
     locale, template_version, attempts, last_error, provider_ref";

fn limit(limit: Option<i64>) -> Result<i64, Error> {
    match limit.unwrap_or(20) {
        n @ 1..=100 => Ok(n),
        _ => Err(Error::Invalid(vec![(
            "limit".into(),
            "must be 1 to 100".into(),
        )])),
    }
}

fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Problem::validation(e.body_text()))
}

/// The signed-in user's messages, newest first: what was sent, when, and what became of it
/// (bodies are not shown: a password reset link is not kept once sent).
#[utoipa::path(get, path = "/v1/notifications", tag = "history", params(PageQuery),
    responses((status = 200, body = NotificationPage), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn mine(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    params: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NotificationPage>, Problem> {
    let params = query(params)?;
    let user: Uuid = claims.sub.parse().map_err(|_| Error::NotAUser)?;
    let limit = limit(params.limit)?;
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let items: Vec<Notification> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {NOTIFICATION} FROM deliveries
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(user)
    .bind(params.cursor)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|n| n.id))
        .flatten();
    Ok(Json(NotificationPage { items, next_cursor }))
}

/// Deliveries across users (admins), newest first, filtered.
#[utoipa::path(get, path = "/v1/notifications/deliveries", tag = "history", params(SearchQuery),
    responses((status = 200, body = DeliveryPage), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, Problem> {
    let params = query(params)?;
    let limit = limit(params.limit)?;
    if let Some(status) = &params.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(Error::Invalid(vec![(
            "status".into(),
            format!("must be one of {}", STATUSES.join(", ")),
        )])
        .into());
    }
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let items: Vec<Delivery> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM deliveries
         WHERE ($1::text IS NULL OR lower(recipient) = lower($1))
           AND ($2::uuid IS NULL OR user_id = $2)
           AND ($3::text IS NULL OR status = $3)
           AND ($4::text IS NULL OR kind = $4)
           AND ($5::uuid IS NULL OR event_id = $5)
           AND ($6::uuid IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7"
    )))
    .bind(params.recipient.as_deref().map(str::trim))
    .bind(params.user_id)
    .bind(&params.status)
    .bind(&params.kind)
    .bind(params.event_id)
    .bind(params.cursor)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::from)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|d| d.notification.id))
        .flatten();
    Ok(Json(DeliveryPage { items, next_cursor }))
}

async fn detail(conn: &mut sqlx::PgConnection, id: &str) -> Result<DeliveryDetail, Error> {
    let not_found = || Error::NotFound(format!("No delivery {id}."));
    let id = Uuid::try_parse(id).map_err(|_| not_found())?;
    let delivery: Delivery = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY} FROM deliveries WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(not_found)?;
    let events = sqlx::query_as(
        "SELECT status, detail, at FROM delivery_events WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(DeliveryDetail { delivery, events })
}

/// One delivery with its history (admins).
#[utoipa::path(get, path = "/v1/notifications/deliveries/{id}", tag = "history",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses((status = 200, body = DeliveryDetail), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(detail(&mut conn, &id).await?))
}

/// Sends a failed delivery again (admins): its attempts start over.
#[utoipa::path(post, path = "/v1/notifications/deliveries/{id}/replay", tag = "history",
    params(("id" = Uuid, Path, description = "The delivery's id")),
    responses((status = 200, body = DeliveryDetail, description = "Queued again"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Not failed")),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, Error> {
    let mut tx = state.db.begin().await?;
    let current = detail(&mut tx, &id).await?;
    let delivery_id = current.delivery.notification.id;
    if !deliveries::replay(&mut tx, delivery_id, &admin.sub).await? {
        return Err(Error::Conflict(format!(
            "Delivery {id} is {}; only failed deliveries are replayed.",
            current.delivery.notification.status
        )));
    }
    let replayed = detail(&mut tx, &id).await?;
    tx.commit().await?;
    tracing::info!(delivery = %delivery_id, by = %admin.sub, "delivery replayed");
    Ok(Json(replayed))
}
