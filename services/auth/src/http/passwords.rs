//! Password change and reset.

use axum::{Extension, extract::State, http::StatusCode};
use chrono::Utc;
use serde::Deserialize;
use tienda_events::{Envelope, user::UserPasswordResetRequestedV2};
use tienda_kit::{Problem, json::Json, jwt::Claims, net::ClientIp, outbox};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{error::Error, password, store, tokens};

/// How long a reset token works.
const RESET_TTL_MINUTES: i64 = 60;

/// `POST /v1/auth/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The password now.
    pub current_password: String,
    /// The new one (same policy as registration).
    pub new_password: String,
}

/// `POST /v1/auth/password/reset`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's email.
    pub email: String,
}

/// `POST /v1/auth/password/reset/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token from the reset message.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// Changes the password; every other session is signed out.
#[utoipa::path(post, path = "/v1/auth/password", tag = "passwords", request_body = ChangePassword,
    responses((status = 204), (status = 401, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)), security(("bearer" = [])))]
pub async fn change(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    ClientIp(client): ClientIp,
    Json(body): Json<ChangePassword>,
) -> Result<StatusCode, Error> {
    let id: Uuid = claims.sub.parse().map_err(|_| Error::InvalidCredentials)?;
    let user = {
        let mut conn = state.db.acquire().await?;
        store::accounts::user_by_id(&mut conn, id)
            .await?
            .ok_or(Error::InvalidCredentials)?
    };
    let ok =
        super::accounts::confirm_password(&state, client, &user, body.current_password).await?;
    if !ok {
        return Err(Error::Invalid(vec![(
            "current_password".into(),
            "is not your current password".into(),
        )]));
    }
    let problems = password::violations(&body.new_password, &user.email, &user.name);
    if !problems.is_empty() {
        return Err(Error::Invalid(
            problems
                .into_iter()
                .map(|m| ("new_password".into(), m))
                .collect(),
        ));
    }
    let hash = state.hasher.hash(body.new_password).await?;
    let mut tx = state.db.begin().await?;
    store::accounts::set_password(&mut tx, id, &hash).await?;
    store::password_resets::void_resets(&mut tx, id).await?;
    let keep = claims.sid.as_deref().and_then(|s| s.parse().ok());
    store::sessions::revoke_other_sessions(&mut tx, id, keep, "password changed").await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a reset: if the account exists, a single-use token goes to the notifications service
/// through the `user.password_reset_requested` event, sealed. The answer is the same either
/// way.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "passwords", request_body = ResetRequest,
    responses((status = 202, description = "Accepted whether or not the account exists")))]
pub async fn request_reset(
    State(state): State<AppState>,
    Json(body): Json<ResetRequest>,
) -> Result<StatusCode, Error> {
    let email = body.email.trim().to_lowercase();
    let mut tx = state.db.begin().await?;
    if let Some(user) = store::accounts::user_by_email(&mut tx, &email).await? {
        let (token, hash) = tokens::opaque_token();
        let expires_at = Utc::now() + chrono::Duration::minutes(RESET_TTL_MINUTES);
        // Only the newest link works: an older one, perhaps in a mailbox someone else reads,
        // stops working.
        store::password_resets::void_resets(&mut tx, user.id).await?;
        store::password_resets::insert_reset(&mut tx, user.id, &hash, expires_at).await?;
        // Sealed: the stream keeps the event for days, and a readable token there would be
        // a working way into the account for anyone who can read the stream.
        let event = UserPasswordResetRequestedV2 {
            user_id: user.id,
            email: user.email,
            sealed_token: state
                .sealer
                .seal(&UserPasswordResetRequestedV2::seal_context(user.id), &token),
            expires_at,
        };
        outbox::enqueue(&mut tx, Envelope::new("auth", event)).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

/// Completes a reset: sets the password, signs out every session and marks the address
/// verified (the link reached it).
#[utoipa::path(post, path = "/v1/auth/password/reset/confirm", tag = "passwords", request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    Json(body): Json<ResetConfirm>,
) -> Result<StatusCode, Problem> {
    let hash = tokens::hash_opaque_token(body.token.trim());
    let invalid = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-reset-token",
            "Invalid reset token",
        )
        .with_detail("The link is unknown, used or expired; ask for a new one.")
    };
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let Some(user_id) = store::password_resets::consume_reset(&mut tx, &hash).await? else {
        return Err(invalid());
    };
    let user = store::accounts::user_by_id(&mut tx, user_id)
        .await?
        .ok_or_else(invalid)?;
    let problems = password::violations(&body.password, &user.email, &user.name);
    if !problems.is_empty() {
        // Rolling back keeps the token usable for a better password.
        return Err(Error::Invalid(
            problems
                .into_iter()
                .map(|m| ("password".into(), m))
                .collect(),
        )
        .into());
    }
    let new = state.hasher.hash(body.password).await?;
    store::accounts::set_password(&mut tx, user_id, &new).await?;
    store::password_resets::void_resets(&mut tx, user_id).await?;
    store::sessions::revoke_other_sessions(&mut tx, user_id, None, "password reset").await?;
    // The link reached the mailbox: the address is the account holder's.
    store::accounts::mark_verified(&mut tx, user_id, &user.email).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
