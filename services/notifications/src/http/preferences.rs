//! `/v1/notifications/preferences`: what the signed-in user gets, and in which language.

use axum::{Extension, extract::State};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use uuid::Uuid;

use super::AppState;
use crate::{
    error::Error,
    preferences::{self, Preferences, PreferencesUpdate},
};

fn user(claims: &Claims) -> Result<Uuid, Error> {
    claims.sub.parse().map_err(|_| Error::NotAUser)
}

/// The signed-in user's preferences: every category with whether they get it (critical ones
/// always), and their locale.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "preferences",
    responses((status = 200, body = Preferences), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<Preferences>, Error> {
    let user_id = user(&claims)?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(preferences::load(&mut conn, user_id).await?))
}

/// Replaces the signed-in user's preferences. Categories left out are subscribed;
/// unsubscribing from a critical category (security, orders) is 422.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "preferences",
    request_body = PreferencesUpdate,
    responses((status = 200, body = Preferences), (status = 401, body = Problem),
              (status = 422, body = Problem, description = "A critical category, an unknown \
                  category or locale")),
    security(("bearer" = [])))]
pub async fn put(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Json(update): Json<PreferencesUpdate>,
) -> Result<Json<Preferences>, Error> {
    let user_id = user(&claims)?;
    let errors = preferences::check(&update);
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    let mut tx = state.db.begin().await?;
    preferences::save(&mut tx, user_id, &update).await?;
    let saved = preferences::load(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(Json(saved))
}
