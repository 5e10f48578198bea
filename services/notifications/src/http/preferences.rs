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
/// unsubscribing from a critical category (security, orders) is 422. A `phone` other than
/// the verified one is texted a code and waits in `phone_pending` until it is sent back.
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "preferences",
    request_body = PreferencesUpdate,
    responses((status = 200, body = Preferences), (status = 401, body = Problem),
              (status = 429, body = Problem, description = "Too many codes sent to this \
                  person or number; `Retry-After` says when"),
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
    if let Some(number) = &update.phone
        && preferences::phone(&mut tx, user_id).await?.as_deref() != Some(number.as_str())
    {
        let locale = update.locale.unwrap_or(state.default_locale);
        crate::phone::request(
            &mut tx,
            user_id,
            number,
            locale,
            &state.links.shop,
            &state.sms_countries,
        )
        .await?;
    }
    let saved = preferences::load(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(Json(saved))
}

/// `POST /v1/notifications/phone/verify`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneCode {
    /// The six digits texted to the pending number.
    pub code: String,
}

/// Confirms the pending phone number with the code texted to it; the preferences with the
/// number in `phone`. A wrong code is 422 (five tries), none pending or expired 409.
#[utoipa::path(post, path = "/v1/notifications/phone/verify", tag = "preferences",
    request_body = PhoneCode,
    responses((status = 200, body = Preferences), (status = 401, body = Problem),
              (status = 409, body = Problem, description = "No number pending, the code \
                  expired, or too many wrong codes"),
              (status = 422, body = Problem, description = "A wrong code")),
    security(("bearer" = [])))]
pub async fn verify_phone(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Json(body): Json<PhoneCode>,
) -> Result<Json<Preferences>, Error> {
    let user_id = user(&claims)?;
    if body.code.len() > 16 {
        return Err(Error::Invalid(vec![(
            "code".into(),
            "is six digits".into(),
        )]));
    }
    let mut tx = state.db.begin().await?;
    match crate::phone::verify(&mut tx, user_id, &body.code).await? {
        crate::phone::Checked::Verified => {
            let saved = preferences::load(&mut tx, user_id).await?;
            tx.commit().await?;
            Ok(Json(saved))
        }
        crate::phone::Checked::Wrong(left) => {
            // The wrong try counts.
            tx.commit().await?;
            Err(Error::Invalid(vec![(
                "code".into(),
                format!("is not the code sent; {left} tries left"),
            )]))
        }
    }
}
