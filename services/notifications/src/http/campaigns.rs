//! `/v1/notifications/campaigns` (admins): marketing content on one channel to a segment, sent
//! in batches at a rate; its progress by delivery status; cancelling it.

use std::collections::BTreeMap;

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    campaigns::{self, Segment},
    channel::Channel,
    error::Error,
    locale::Locale,
    templates::{CampaignContent, CampaignTemplates},
};

/// `POST /v1/notifications/campaigns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// What it is (at most 200 characters).
    pub name: String,
    /// `email`, `sms` or `push`.
    pub channel: Channel,
    /// Who; empty: everyone.
    #[serde(default)]
    pub segment: Segment,
    /// The message per locale (`{"es": {...}, "en": {...}}`); people reading another
    /// language get the first.
    #[schema(value_type = BTreeMap<String, CampaignContent>)]
    pub content: BTreeMap<Locale, CampaignContent>,
    /// People per second, 1 to 10,000 (default: email 100, SMS 10, push 100).
    #[serde(default)]
    pub rate_per_second: Option<i32>,
    /// When to start (default now; at most a year ahead).
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
}

/// A campaign and how far it got.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Campaign {
    /// Its id.
    pub id: Uuid,
    /// What it is.
    pub name: String,
    /// Its channel.
    pub channel: String,
    /// `scheduled`, `running`, `completed` (everyone enqueued) or `cancelled`.
    pub status: String,
    /// Who.
    #[schema(value_type = Segment)]
    pub segment: sqlx::types::Json<Segment>,
    /// People per second.
    pub rate_per_second: i32,
    /// People enqueued so far.
    pub enqueued: i32,
    /// When it starts.
    pub start_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When everyone was enqueued or it was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its deliveries by status (`queued`, `sent`, `suppressed`, …).
    #[sqlx(skip)]
    pub deliveries: BTreeMap<String, i64>,
    /// The people in the segment when it was created (only in the answer to POST).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<i64>,
}

/// Campaigns, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    /// The 100 newest.
    pub items: Vec<Campaign>,
}

const COLUMNS: &str = "id, name, channel, status, segment, rate_per_second, enqueued, start_at, \
                       created_by, created_at, finished_at";

fn check(new: &NewCampaign) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        errors.push((
            "name".into(),
            "must be 1 to 200 characters, without control characters".into(),
        ));
    }
    if let Some(rate) = new.rate_per_second
        && !(1..=10_000).contains(&rate)
    {
        errors.push(("rate_per_second".into(), "must be 1 to 10000".into()));
    }
    let now = Utc::now();
    let year = chrono::Duration::days(366);
    if let Some(start) = new.start_at
        && (start > now + year || start < now - year)
    {
        errors.push(("start_at".into(), "must be within a year of now".into()));
    }
    // Dates PostgreSQL and people can hold: from 1970 to a year ahead.
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    for (field, date) in [
        ("segment.registered_after", new.segment.registered_after),
        ("segment.registered_before", new.segment.registered_before),
    ] {
        if date.is_some_and(|d| d < epoch || d > now + year) {
            errors.push((
                field.into(),
                "must be between 1970 and a year from now".into(),
            ));
        }
    }
    let segment = &new.segment;
    if segment.locales.as_ref().is_some_and(Vec::is_empty) {
        errors.push((
            "segment.locales".into(),
            "must not be empty when given".into(),
        ));
    }
    if segment
        .user_ids
        .as_ref()
        .is_some_and(|ids| ids.is_empty() || ids.len() > 10_000)
    {
        errors.push((
            "segment.user_ids".into(),
            "must hold 1 to 10000 ids when given".into(),
        ));
    }
    if let (Some(after), Some(before)) = (segment.registered_after, segment.registered_before)
        && after >= before
    {
        errors.push((
            "segment.registered_before".into(),
            "must be after registered_after".into(),
        ));
    }
    errors
}

/// Creates a campaign; it starts at `start_at` (default now). Content is checked like a
/// template: each part the channel needs must compile and render against a sample person.
#[utoipa::path(post, path = "/v1/notifications/campaigns", tag = "campaigns",
    request_body = NewCampaign,
    responses((status = 201, body = Campaign), (status = 401, body = Problem),
              (status = 403, body = Problem),
              (status = 422, body = Problem, description = "A part missing, not compiling or \
                  not rendering (with its line), a bad segment or rate")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Json(new): Json<NewCampaign>,
) -> Result<(StatusCode, Json<Campaign>), Error> {
    let mut errors = check(&new);
    if let Err(content_errors) = CampaignTemplates::compile(new.channel, &new.content) {
        errors.extend(content_errors);
    }
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let rate = new.rate_per_second.unwrap_or(match new.channel {
        Channel::Sms => 10,
        _ => 100,
    });
    let start = new.start_at.unwrap_or_else(Utc::now);
    let mut tx = state.db.begin().await?;
    let mut campaign: Campaign = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns (id, name, channel, segment, content, rate_per_second, status,
                                start_at, next_batch_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, 'scheduled', $7, $7, $8)
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(new.name.trim())
    .bind(new.channel.as_str())
    .bind(sqlx::types::Json(&new.segment))
    .bind(sqlx::types::Json(&new.content))
    .bind(rate)
    .bind(start)
    .bind(&admin.sub)
    .fetch_one(&mut *tx)
    .await?;
    campaign.audience =
        Some(campaigns::audience(&mut tx, &new.segment, state.default_locale).await?);
    tx.commit().await?;
    tracing::info!(campaign = %campaign.id, channel = %campaign.channel, by = %admin.sub,
        audience = campaign.audience, "campaign created");
    Ok((StatusCode::CREATED, Json(campaign)))
}

/// The 100 newest campaigns.
#[utoipa::path(get, path = "/v1/notifications/campaigns", tag = "campaigns",
    responses((status = 200, body = CampaignList), (status = 401, body = Problem),
              (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<CampaignList>, Error> {
    let items: Vec<Campaign> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns ORDER BY created_at DESC, id DESC LIMIT 100"
    )))
    .fetch_all(&state.db)
    .await?;
    Ok(Json(CampaignList { items }))
}

async fn load(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Campaign, Error> {
    let mut campaign: Campaign = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::NotFound(format!("No campaign {id}.")))?;
    campaign.deliveries = campaigns::counts(conn, id).await?;
    Ok(campaign)
}

/// One campaign with its deliveries by status.
#[utoipa::path(get, path = "/v1/notifications/campaigns/{id}", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses((status = 200, body = Campaign), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(load(&mut conn, id).await?))
}

/// Cancels a campaign: nobody more is enqueued and its deliveries not yet sent are
/// suppressed (`campaign_cancelled`). Cancelling twice is 409.
#[utoipa::path(post, path = "/v1/notifications/campaigns/{id}/cancel", tag = "campaigns",
    params(("id" = Uuid, Path, description = "The campaign")),
    responses((status = 200, body = Campaign), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<Json<Campaign>, Error> {
    let mut tx = state.db.begin().await?;
    // The row lock waits for a batch being written, so none lands after the cancel.
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM campaigns WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => return Err(Error::NotFound(format!("No campaign {id}."))),
        Some("cancelled") => {
            return Err(Error::Conflict(format!(
                "Campaign {id} is already cancelled."
            )));
        }
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE campaigns SET status = 'cancelled', finished_at = coalesce(finished_at, now())
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let detail = format!("campaign cancelled by {}", admin.sub);
    sqlx::query(
        "WITH cancelled AS (
             UPDATE deliveries SET status = 'suppressed', status_reason = 'campaign_cancelled',
                    updated_at = now()
             WHERE event_id = $1 AND status = 'queued' RETURNING id)
         INSERT INTO delivery_events (delivery_id, status, detail)
         SELECT id, 'suppressed', $2 FROM cancelled",
    )
    .bind(id)
    .bind(&detail)
    .execute(&mut *tx)
    .await?;
    let campaign = load(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(campaign = %id, by = %admin.sub, "campaign cancelled");
    Ok(Json(campaign))
}
