//! Registration, login, refresh with rotation and reuse detection, logout, me.

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tienda_events::{
    Envelope,
    user::{UserEmailVerificationRequested, UserRegistered, UserRegistrationAttempted},
};
use tienda_kit::{Problem, json::Json, jwt::Claims, net::ClientIp, outbox};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use crate::{
    account::NewAccount,
    error::Error,
    keys::SigningKey,
    lockout::{Attempt, Throttle},
    role::Role,
    rotation::{self, Redeemed},
    store::{self, accounts::User},
    tokens,
};

/// `POST /v1/auth/register`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email address; also the login.
    pub email: String,
    /// At least 10 characters, strong (zxcvbn score ≥ 3), not containing the email.
    pub password: String,
    /// Display name.
    pub name: String,
}

/// The account as its owner sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Whether TOTP is on.
    pub mfa_enabled: bool,
    /// Whether the email address is verified (`POST /v1/auth/email/verify` with the link's
    /// token; a new link: `POST /v1/auth/email/verify/resend`).
    pub email_verified: bool,
}

/// The answer to a registration: the same whether or not the address already had an account,
/// so registration cannot be used to learn who has one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    /// The address, as the login knows it (trimmed, lower-cased).
    pub email: String,
    /// What happens next.
    pub detail: String,
}

/// `POST /v1/auth/email/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    /// The token from the verification link.
    pub token: String,
}

/// How long a verification link works.
const VERIFICATION_TTL_HOURS: i64 = 48;

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// The answer to a password login: tokens, or a challenge for the second factor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    /// Signed in.
    Tokens(TokenPair),
    /// TOTP is on: send a code with this token to `POST /v1/auth/login/mfa` within 5 minutes.
    MfaRequired {
        /// Always true.
        mfa_required: bool,
        /// Single-use challenge.
        mfa_token: String,
    },
}

/// `POST /v1/auth/refresh` (and logout).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// A new pair of tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// JWT access token (EdDSA, `typ: at+jwt`).
    pub access_token: String,
    /// Opaque, single-use refresh token.
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u32,
}

fn profile(user: &User) -> Me {
    Me {
        id: user.id,
        email: user.email.clone(),
        name: user.name.clone(),
        roles: user.roles.clone(),
        mfa_enabled: false,
        email_verified: user.email_verified,
    }
}

/// Creates an account and sends a link to verify its address; the new account can sign in
/// at once. When the address already has an account nothing changes, its owner is told by
/// email, and the answer is the same — `202` either way, after the same work (the password is
/// hashed in both cases), so registration tells no one who has an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "accounts", request_body = RegisterRequest,
    responses((status = 202, body = Registration), (status = 422, body = Problem),
        (status = 503, description = "Too many passwords are being hashed at once; retry after `Retry-After`", body = Problem)))]
pub async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<Registration>), Error> {
    let new = NewAccount::parse(&body.email, &body.name, &body.password)?;
    let hash = state.hasher.hash(body.password).await?;
    let user = new.into_user(hash);
    let mut tx = state.db.begin().await?;
    if store::accounts::create_user_if_new(&mut tx, &user).await? {
        let event = UserRegistered {
            user_id: user.id,
            email: user.email.clone(),
            name: user.name.clone(),
            roles: Role::names(&user.roles),
        };
        outbox::enqueue(&mut tx, Envelope::new("auth", event)).await?;
        request_verification(&state, &mut tx, &user).await?;
    } else if let Some(owner) = store::accounts::user_by_email(&mut tx, &user.email).await?
        // One note an hour: registration must not become a way to flood a mailbox.
        && store::accounts::note_registration_attempt(&mut tx, owner.id).await?
    {
        let event = UserRegistrationAttempted {
            user_id: owner.id,
            email: owner.email,
        };
        outbox::enqueue(&mut tx, Envelope::new("auth", event)).await?;
    }
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Registration {
            email: user.email,
            detail: "Check your inbox: a link to verify the address is on its way. If the \
                     address already had an account, its owner got a note instead."
                .into(),
        }),
    ))
}

/// Makes a verification token for `user`'s address (voiding older ones) and queues the
/// `user.email_verification_requested` event carrying it sealed, in `tx`.
pub(crate) async fn request_verification(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    user: &User,
) -> Result<(), Error> {
    let (token, hash) = tokens::opaque_token();
    let expires_at = Utc::now() + chrono::Duration::hours(VERIFICATION_TTL_HOURS);
    store::email_verifications::insert(tx, user.id, &user.email, &hash, expires_at).await?;
    let event = UserEmailVerificationRequested {
        user_id: user.id,
        email: user.email.clone(),
        sealed_token: state.sealer.seal(
            &UserEmailVerificationRequested::seal_context(user.id),
            &token,
        ),
        expires_at,
    };
    outbox::enqueue(tx, Envelope::new("auth", event)).await?;
    Ok(())
}

/// Verifies an address with the token from its link. The token works once, for 48 hours, and
/// only while the account still has the address it was sent to.
#[utoipa::path(post, path = "/v1/auth/email/verify", tag = "accounts", request_body = VerifyEmail,
    responses((status = 204), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn verify_email(
    State(state): State<AppState>,
    Json(body): Json<VerifyEmail>,
) -> Result<StatusCode, Problem> {
    let invalid = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-verification-token",
            "Invalid verification token",
        )
        .with_detail(
            "The link is unknown, used or expired; sign in and ask for a new one \
             (POST /v1/auth/email/verify/resend).",
        )
    };
    let hash = tokens::hash_opaque_token(body.token.trim());
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let Some((user_id, email)) = store::email_verifications::consume(&mut tx, &hash).await? else {
        return Err(invalid());
    };
    if !store::accounts::mark_verified(&mut tx, user_id, &email).await? {
        return Err(invalid());
    }
    tx.commit().await.map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a new verification link to the signed-in account's address (older links stop
/// working).
#[utoipa::path(post, path = "/v1/auth/email/verify/resend", tag = "accounts",
    responses((status = 202), (status = 401, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn resend_verification(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<StatusCode, Problem> {
    let id: Uuid = claims.sub.parse().map_err(|_| Error::InvalidCredentials)?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let user = store::accounts::user_by_id(&mut tx, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    if user.email_verified {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already-verified",
            "Address already verified",
        )
        .with_detail("This account's address is verified; there is nothing to send."));
    }
    request_verification(&state, &mut tx, &user).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(StatusCode::ACCEPTED)
}

/// Signs an access token and stores a new refresh token in `conn`'s transaction. The signing
/// key is fetched by the caller before the transaction opens, so a request never holds one
/// pooled connection while waiting for another.
pub(crate) async fn issue(
    state: &AppState,
    key: &SigningKey,
    conn: &mut sqlx::PgConnection,
    user: &User,
    session: Uuid,
) -> Result<TokenPair, Error> {
    let (access_token, expires_in) = tokens::access_token(
        key,
        &state.config.issuer,
        &state.config.audience,
        state.config.access_token_ttl_seconds,
        user,
        session,
    );
    let (refresh_token, hash) = tokens::opaque_token();
    let expires_at =
        Utc::now() + chrono::Duration::seconds(i64::from(state.config.refresh_token_ttl_seconds));
    store::sessions::insert_refresh_token(conn, session, &hash, expires_at).await?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in,
    })
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem), (status = 429, body = Problem),
        (status = 503, description = "Too many passwords are being checked at once; retry after `Retry-After`", body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    let email = body.email.trim().to_lowercase();
    if email.len() > 254 {
        // No account has such an address (registration refuses it), and counting it would let
        // a client store a megabyte-long key per attempt.
        return Err(Error::InvalidCredentials);
    }
    let throttle = Throttle::new(&email, client);
    let (attempt, user) = {
        let mut conn = state.db.acquire().await?;
        let attempt = throttle.attempt(&mut conn).await?;
        (
            attempt,
            store::accounts::user_by_email(&mut conn, &email).await?,
        )
        // The connection goes back to the pool before the slow hash.
    };
    let matches = check_password(&state, &throttle, attempt, user.as_ref(), body.password).await?;
    let Some(user) = user.filter(|_| matches) else {
        return Err(Error::InvalidCredentials);
    };
    let key = state.keys.active().await?;
    let mut tx = state.db.begin().await?;
    throttle.succeeded(&mut tx).await?;
    let agent = headers.get("user-agent").and_then(|v| v.to_str().ok());
    let answer = sign_in(&state, &mut tx, &key, &user, agent, &client.to_string()).await?;
    tx.commit().await?;
    Ok(Json(answer))
}

/// Checks the password of a signed-in `user` (changing the password, turning TOTP off) under
/// the same throttle as a sign-in from `client`: a stolen access token must not become an
/// unthrottled password oracle. An account without a password never matches.
pub(crate) async fn confirm_password(
    state: &AppState,
    client: std::net::IpAddr,
    user: &User,
    password: String,
) -> Result<bool, Error> {
    let throttle = Throttle::new(&user.email, client);
    let attempt = {
        let mut conn = state.db.acquire().await?;
        throttle.attempt(&mut conn).await?
    };
    let matches = check_password(state, &throttle, attempt, Some(user), password).await?;
    if matches {
        let mut tx = state.db.begin().await?;
        throttle.succeeded(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(matches)
}

/// Checks `password` for a counted `attempt`: against `user`'s hash, or — for an unknown email
/// or an account without a password — a dummy hash, so every path takes the same time. A
/// wrong password is recorded as a failure; a right one is left for the caller to settle with
/// [`Throttle::succeeded`] in its own transaction. Busy (503) leaves the attempt counted: a
/// flood that fills the hasher is slowed too.
async fn check_password(
    state: &AppState,
    throttle: &Throttle,
    attempt: Attempt,
    user: Option<&User>,
    password: String,
) -> Result<bool, Error> {
    let hash = user.and_then(|u| u.password_hash.clone());
    let has_password = hash.is_some();
    let stored = hash.unwrap_or_else(|| state.dummy_hash.to_string());
    let matches = state.hasher.verify(stored, password).await? && has_password;
    if !matches {
        let mut tx = state.db.begin().await?;
        throttle.failed(&mut tx, attempt, user).await?;
        tx.commit().await?;
    }
    Ok(matches)
}

/// After the first factor (a password, or an OIDC provider): a new session with tokens, or,
/// with TOTP on, a challenge for the code. Runs in the caller's transaction.
pub(crate) async fn sign_in(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    key: &SigningKey,
    user: &User,
    agent: Option<&str>,
    ip: &str,
) -> Result<LoginResponse, Error> {
    if store::mfa::mfa_enabled(tx, user.id).await? {
        let (token, hash) = tokens::opaque_token();
        let expires_at = Utc::now() + chrono::Duration::minutes(5);
        store::mfa::insert_challenge(tx, user.id, &hash, expires_at).await?;
        return Ok(LoginResponse::MfaRequired {
            mfa_required: true,
            mfa_token: token,
        });
    }
    let session = store::sessions::create_session(tx, user.id, agent, Some(ip)).await?;
    let pair = issue(state, key, tx, user, session).await?;
    Ok(LoginResponse::Tokens(pair))
}

/// Trades a refresh token for a new pair. A token is single use: presenting one again means it
/// was stolen (or copied), so its whole session is revoked and the answer is 401.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, Error> {
    let hash = tokens::hash_opaque_token(body.refresh_token.trim());
    let key = state.keys.active().await?;
    let mut tx = state.db.begin().await?;
    match rotation::redeem(&mut tx, &hash).await? {
        Redeemed::Valid { session, user } => {
            let pair = issue(&state, &key, &mut tx, &user, session).await?;
            tx.commit().await?;
            Ok(Json(pair))
        }
        Redeemed::Reused { session, user } => {
            tx.commit().await?;
            tracing::warn!(%session, %user, "refresh token reuse: session revoked");
            Err(Error::InvalidRefreshToken)
        }
        Redeemed::Invalid => Err(Error::InvalidRefreshToken),
    }
}

/// Ends the current session: its refresh tokens stop working.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts",
    responses((status = 204), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<StatusCode, Error> {
    let session = claims.sid.as_deref().and_then(|s| s.parse::<Uuid>().ok());
    if let Some(session) = session {
        let mut conn = state.db.acquire().await?;
        store::sessions::revoke_session(&mut conn, session, "logout").await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in account.
#[utoipa::path(get, path = "/v1/auth/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn me(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<Me>, Error> {
    let id: Uuid = claims.sub.parse().map_err(|_| Error::InvalidCredentials)?;
    let mut conn = state.db.acquire().await?;
    let user = store::accounts::user_by_id(&mut conn, id)
        .await?
        .ok_or(Error::InvalidCredentials)?;
    let mut me = profile(&user);
    me.mfa_enabled = store::mfa::mfa_enabled(&mut conn, id).await?;
    Ok(Json(me))
}
