//! TOTP second factor: enrol, confirm (which issues recovery codes), disable, and the second
//! step of a login.

use axum::{Extension, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, accounts::TokenPair};
use crate::{error::Error, mfa, store, tokens};

/// An enrolment to put in an authenticator app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Enrolment {
    /// The secret in base32.
    pub secret: String,
    /// `otpauth://` URI (render as a QR code).
    pub otpauth_uri: String,
}

/// A code: six TOTP digits, or (where allowed) a recovery code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Code {
    /// The code.
    pub code: String,
}

/// The recovery codes, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes; store them somewhere safe.
    pub recovery_codes: Vec<String>,
}

/// The second step of a login.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLogin {
    /// From the first step's answer.
    pub mfa_token: String,
    /// A TOTP code or a recovery code.
    pub code: String,
}

fn user_id(claims: &Claims) -> Result<Uuid, Error> {
    claims.sub.parse().map_err(|_| Error::InvalidCredentials)
}

fn bad_code() -> Error {
    Error::Invalid(vec![("code".into(), "is wrong or was already used".into())])
}

/// Checks `code` (TOTP, once per step; or an unused recovery code when `recovery` allows it)
/// inside the caller's transaction.
pub(crate) async fn check_code(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    user: &store::accounts::User,
    code: &str,
    recovery: bool,
) -> Result<bool, Error> {
    let Some(row) = store::mfa::lock_totp(conn, user.id).await? else {
        return Ok(false);
    };
    if mfa::is_totp_code(code) {
        let secret = state
            .keys
            .open(&format!("totp:{}", user.id), &row.nonce, &row.secret)?;
        let totp = mfa::totp(&secret, &user.email);
        return match totp.check_current(code.trim()) {
            Some(step) if step as i64 > row.last_step => {
                store::mfa::accept_step(conn, user.id, step as i64).await?;
                Ok(true)
            }
            _ => Ok(false),
        };
    }
    Ok(recovery
        && row.confirmed
        && store::mfa::use_recovery_code(conn, user.id, &mfa::hash_code(code)).await?)
}

/// Starts TOTP enrolment (or restarts an unconfirmed one).
#[utoipa::path(post, path = "/v1/auth/mfa/totp", tag = "mfa",
    responses((status = 200, body = Enrolment), (status = 409, body = Problem)), security(("bearer" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<Enrolment>, Problem> {
    let id = user_id(&claims)?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    let secret = mfa::new_secret();
    let (nonce, sealed) = state.keys.seal(&format!("totp:{id}"), &secret)?;
    if !store::mfa::start_totp(&mut tx, id, &sealed, &nonce).await? {
        return Err(Problem::conflict(
            "Two-factor sign-in is on already; turn it off first to enrol again.",
        ));
    }
    tx.commit().await.map_err(Error::from)?;
    let totp = mfa::totp(&secret, &user.email);
    let otpauth_uri = totp.to_url().map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(Enrolment {
        secret: totp.secret().to_base32(),
        otpauth_uri,
    }))
}

/// Confirms enrolment with a current code; MFA is on from now, and the recovery codes are shown
/// this once.
#[utoipa::path(post, path = "/v1/auth/mfa/totp/verify", tag = "mfa", request_body = Code,
    responses((status = 200, body = RecoveryCodes), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Json(body): Json<Code>,
) -> Result<Json<RecoveryCodes>, Error> {
    let id = user_id(&claims)?;
    let mut tx = state.db.begin().await?;
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    if !mfa::is_totp_code(&body.code)
        || !check_code(&state, &mut tx, &user, &body.code, false).await?
    {
        return Err(bad_code());
    }
    let codes = mfa::recovery_codes();
    let hashes: Vec<_> = codes.iter().map(|c| mfa::hash_code(c)).collect();
    store::mfa::set_recovery_codes(&mut tx, id, &hashes).await?;
    tx.commit().await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Turns MFA off; needs a current code or a recovery code.
#[utoipa::path(delete, path = "/v1/auth/mfa/totp", tag = "mfa", request_body = Code,
    responses((status = 204), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Json(body): Json<Code>,
) -> Result<StatusCode, Error> {
    let id = user_id(&claims)?;
    let mut tx = state.db.begin().await?;
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    if !check_code(&state, &mut tx, &user, &body.code, true).await? {
        return Err(bad_code());
    }
    store::mfa::delete_totp(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Second step of a login: the challenge from the first step and a code.
#[utoipa::path(post, path = "/v1/auth/login/mfa", tag = "accounts", request_body = MfaLogin,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    Json(body): Json<MfaLogin>,
) -> Result<Json<TokenPair>, Error> {
    let key = state.keys.active().await?;
    let mut tx = state.db.begin().await?;
    let Some(id) =
        store::mfa::consume_challenge(&mut tx, &tokens::hash_opaque_token(body.mfa_token.trim()))
            .await?
    else {
        return Err(Error::InvalidCredentials);
    };
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    if !check_code(&state, &mut tx, &user, &body.code, true).await? {
        // The challenge is spent: a wrong code means starting over with the password.
        tx.commit().await?;
        return Err(Error::InvalidCredentials);
    }
    let session = store::sessions::create_session(&mut tx, user.id, None, None).await?;
    let pair = super::accounts::issue(&state, &key, &mut tx, &user, session).await?;
    tx.commit().await?;
    Ok(Json(pair))
}
