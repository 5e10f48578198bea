//! TOTP second factor: enrol, confirm (which issues recovery codes), disable, and the second
//! step of a login.

use axum::{Extension, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims, net::ClientIp};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, accounts::TokenPair};
use crate::{error::Error, lockout::CodeThrottle, mfa, store, tokens};

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
    // Every code is counted before it is checked, whichever endpoint it came to; only a right
    // one clears the count (a right password does not).
    let throttle = CodeThrottle::new(user.id);
    throttle.attempt(conn).await?;
    let right = check_unthrottled(state, conn, user, &row, code, recovery).await?;
    if right {
        throttle.succeeded(conn).await?;
    }
    Ok(right)
}

async fn check_unthrottled(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    user: &store::accounts::User,
    row: &store::mfa::TotpRow,
    code: &str,
    recovery: bool,
) -> Result<bool, Error> {
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
        tx.commit().await?;
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

/// `DELETE /v1/auth/mfa/totp`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableTotp {
    /// A current TOTP code or an unused recovery code.
    pub code: String,
    /// The account's password. Accounts without one (signed up through an OIDC provider)
    /// need a sign-in within the last 10 minutes instead.
    #[serde(default)]
    pub password: Option<String>,
}

/// How recent a sign-in must be to turn TOTP off without a password.
const RECENT_SIGN_IN_SECONDS: i64 = 600;

/// Turns MFA off; needs a current code or a recovery code, and the password (a stolen access
/// token and a code read over a shoulder must not be enough to remove the second factor).
#[utoipa::path(delete, path = "/v1/auth/mfa/totp", tag = "mfa", request_body = DisableTotp,
    responses((status = 204), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
pub async fn disable(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    ClientIp(client): ClientIp,
    Json(body): Json<DisableTotp>,
) -> Result<StatusCode, Error> {
    let id = user_id(&claims)?;
    let user = {
        let mut conn = state.db.acquire().await?;
        store::accounts::user_by_id(&mut conn, id)
            .await?
            .ok_or(Error::InvalidCredentials)?
    };
    match (body.password, user.password_hash.is_some()) {
        (Some(password), true) => {
            if !super::accounts::confirm_password(&state, client, &user, password).await? {
                return Err(Error::Invalid(vec![(
                    "password".into(),
                    "is not your password".into(),
                )]));
            }
        }
        (None, true) => {
            return Err(Error::Invalid(vec![(
                "password".into(),
                "is required to turn two-factor sign-in off".into(),
            )]));
        }
        (_, false) => {
            if chrono::Utc::now().timestamp() - claims.iat > RECENT_SIGN_IN_SECONDS {
                return Err(Error::Invalid(vec![(
                    "password".into(),
                    "this account has none: sign in again, then turn two-factor sign-in off \
                     within 10 minutes"
                        .into(),
                )]));
            }
        }
    }
    let mut tx = state.db.begin().await?;
    if !check_code(&state, &mut tx, &user, &body.code, true).await? {
        // The count of the wrong code stays.
        tx.commit().await?;
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
