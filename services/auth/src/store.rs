//! SQL. Every function takes the connection (or transaction) it runs on.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{Error, Result};

/// An account.
#[derive(Debug, Clone)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Lower-cased email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Argon2id hash, if the account has a password.
    pub password_hash: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
}

fn user(row: &sqlx::postgres::PgRow) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        name: row.get("name"),
        password_hash: row.get("password_hash"),
        roles: row.get("roles"),
    }
}

/// Inserts an account; a taken email is [`Error::EmailTaken`].
pub async fn create_user(conn: &mut PgConnection, user: &User) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(&user.roles)
    .execute(conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("users_email_key") => {
            Error::EmailTaken
        }
        _ => Error::Database(e),
    })?;
    Ok(())
}

/// An account by email.
pub async fn user_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<User>> {
    Ok(
        sqlx::query("SELECT id, email, name, password_hash, roles FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(conn)
            .await?
            .as_ref()
            .map(user),
    )
}

/// An account by id.
pub async fn user_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    Ok(
        sqlx::query("SELECT id, email, name, password_hash, roles FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .as_ref()
            .map(user),
    )
}

/// Opens a session (a refresh-token family).
pub async fn create_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    user_agent: Option<&str>,
    ip: Option<&str>,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO sessions (id, user_id, user_agent, ip) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(user_id)
        .bind(user_agent)
        .bind(ip)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Stores a refresh token's hash.
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    session_id: Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (id, session_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(session_id)
        .bind(hash)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// A presented refresh token, locked for the rest of the transaction.
#[derive(Debug)]
pub struct PresentedToken {
    /// Row id.
    pub id: Uuid,
    /// Its session.
    pub session_id: Uuid,
    /// Its user.
    pub user_id: Uuid,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Whether its session is revoked.
    pub session_revoked: bool,
}

/// Finds a refresh token by hash and locks it and its session.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<PresentedToken>> {
    Ok(sqlx::query(
        "SELECT t.id, t.session_id, s.user_id, t.used_at, t.expires_at, s.revoked_at IS NOT NULL AS revoked \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?
    .map(|row| PresentedToken {
        id: row.get("id"),
        session_id: row.get("session_id"),
        user_id: row.get("user_id"),
        used_at: row.get("used_at"),
        expires_at: row.get("expires_at"),
        session_revoked: row.get("revoked"),
    }))
}

/// Marks a refresh token used (it can never be used again).
pub async fn mark_used(conn: &mut PgConnection, token_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(token_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Revokes a session, so every refresh token of its family stops working.
pub async fn revoke_session(conn: &mut PgConnection, session_id: Uuid, reason: &str) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = now(), revoke_reason = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that a session was used.
pub async fn touch_session(conn: &mut PgConnection, session_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_used_at = now() WHERE id = $1")
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A session as its owner sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionRow {
    /// Session id (the `sid` claim of its access tokens).
    pub id: Uuid,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When a token of it was last refreshed.
    pub last_used_at: DateTime<Utc>,
    /// The client's User-Agent at login.
    pub user_agent: Option<String>,
}

/// A user's live sessions, newest first.
pub async fn sessions(conn: &mut PgConnection, user_id: Uuid) -> Result<Vec<SessionRow>> {
    Ok(sqlx::query(
        "SELECT id, created_at, last_used_at, user_agent FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| SessionRow {
        id: row.get("id"),
        created_at: row.get("created_at"),
        last_used_at: row.get("last_used_at"),
        user_agent: row.get("user_agent"),
    })
    .collect())
}

/// Revokes one of a user's sessions; false when it is not theirs or not live.
pub async fn revoke_own_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> Result<bool> {
    Ok(sqlx::query("UPDATE sessions SET revoked_at = now(), revoke_reason = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(user_id)
        .bind(reason)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Revokes every live session of a user except `keep`; returns how many.
pub async fn revoke_other_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3 \
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Replaces a user's roles.
pub async fn set_roles(conn: &mut PgConnection, user_id: Uuid, roles: &[String]) -> Result<bool> {
    Ok(
        sqlx::query("UPDATE users SET roles = $2, updated_at = now() WHERE id = $1")
            .bind(user_id)
            .bind(roles)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Sets a user's password hash.
pub async fn set_password(conn: &mut PgConnection, user_id: Uuid, hash: &str) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a password-reset token's hash.
pub async fn insert_reset(
    conn: &mut PgConnection,
    user_id: Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(hash)
    .bind(user_id)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes a live reset token: returns its user, or None if unknown, used or expired.
pub async fn consume_reset(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "UPDATE password_resets SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

/// When `key` (an account or an IP) is locked until, if it is now.
pub async fn locked_until(conn: &mut PgConnection, key: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT locked_until FROM login_failures WHERE key = $1 AND locked_until > now()",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// Counts a failed login for `key`; from `threshold` failures on, locks it for
/// `base_seconds · 2^(failures - threshold)` (capped at an hour). Returns (failures, lock).
pub async fn record_failure(
    conn: &mut PgConnection,
    key: &str,
    threshold: i32,
    base_seconds: i32,
) -> Result<(i32, Option<DateTime<Utc>>)> {
    let row = sqlx::query(
        "INSERT INTO login_failures (key, failures) VALUES ($1, 1) \
         ON CONFLICT (key) DO UPDATE SET failures = login_failures.failures + 1, updated_at = now() \
         RETURNING failures",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let failures: i32 = row.get("failures");
    if failures < threshold {
        return Ok((failures, None));
    }
    let seconds = (i64::from(base_seconds) << (failures - threshold).min(12)).min(3600);
    let until: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE login_failures SET locked_until = now() + make_interval(secs => $2) WHERE key = $1 RETURNING locked_until",
    )
    .bind(key)
    .bind(seconds as f64)
    .fetch_one(conn)
    .await?;
    Ok((failures, Some(until)))
}

/// Forgets the failures of `key` after a successful login.
pub async fn clear_failures(conn: &mut PgConnection, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// A user's TOTP enrolment.
#[derive(Debug)]
pub struct TotpRow {
    /// Encrypted secret.
    pub secret: Vec<u8>,
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Whether it was confirmed with a code (only then is MFA on).
    pub confirmed: bool,
    /// The last accepted time step.
    pub last_step: i64,
}

/// The user's TOTP enrolment, locked for the transaction.
pub async fn lock_totp(conn: &mut PgConnection, user_id: Uuid) -> Result<Option<TotpRow>> {
    Ok(sqlx::query("SELECT secret, nonce, confirmed_at IS NOT NULL AS confirmed, last_step FROM totp WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .map(|row| TotpRow {
            secret: row.get("secret"),
            nonce: row.get("nonce"),
            confirmed: row.get("confirmed"),
            last_step: row.get("last_step"),
        }))
}

/// Whether MFA is on for a user.
pub async fn mfa_enabled(conn: &mut PgConnection, user_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await?)
}

/// Starts (or restarts) an unconfirmed enrolment; refuses to replace a confirmed one.
pub async fn start_totp(
    conn: &mut PgConnection,
    user_id: Uuid,
    secret: &[u8],
    nonce: &[u8],
) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO totp (user_id, secret, nonce) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET secret = $2, nonce = $3, last_step = 0 WHERE totp.confirmed_at IS NULL",
    )
    .bind(user_id)
    .bind(secret)
    .bind(nonce)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Records an accepted step (and confirms the enrolment).
pub async fn accept_step(conn: &mut PgConnection, user_id: Uuid, step: i64) -> Result<()> {
    sqlx::query("UPDATE totp SET last_step = $2, confirmed_at = COALESCE(confirmed_at, now()) WHERE user_id = $1")
        .bind(user_id)
        .bind(step)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces a user's recovery codes.
pub async fn set_recovery_codes(
    conn: &mut PgConnection,
    user_id: Uuid,
    hashes: &[Vec<u8>],
) -> Result<()> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for hash in hashes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Uses a recovery code; false if unknown or used.
pub async fn use_recovery_code(
    conn: &mut PgConnection,
    user_id: Uuid,
    hash: &[u8],
) -> Result<bool> {
    Ok(sqlx::query("UPDATE recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(hash)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Turns MFA off: the secret and the codes go.
pub async fn delete_totp(conn: &mut PgConnection, user_id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM totp WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores an MFA challenge.
pub async fn insert_challenge(
    conn: &mut PgConnection,
    user_id: Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO mfa_challenges (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(user_id)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Consumes a live challenge: its user, or None.
pub async fn consume_challenge(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "UPDATE mfa_challenges SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING user_id",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

/// Records a started OIDC sign-in (and forgets the ones that expired).
pub async fn insert_oidc_flow(
    conn: &mut PgConnection,
    state_hash: &[u8],
    provider: &str,
    nonce: &str,
    pkce_verifier: &str,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("DELETE FROM oidc_flows WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_flows (state_hash, provider, nonce, pkce_verifier, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(state_hash)
    .bind(provider)
    .bind(nonce)
    .bind(pkce_verifier)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A started OIDC sign-in, taken (deleted) by its callback.
#[derive(Debug)]
pub struct OidcFlow {
    /// Expected in the ID token.
    pub nonce: String,
    /// Sent with the code.
    pub pkce_verifier: String,
    /// After this the flow is void.
    pub expires_at: DateTime<Utc>,
}

/// Takes the flow of `state_hash` at `provider`: a state works once.
pub async fn take_oidc_flow(
    conn: &mut PgConnection,
    state_hash: &[u8],
    provider: &str,
) -> Result<Option<OidcFlow>> {
    let row = sqlx::query(
        "DELETE FROM oidc_flows WHERE state_hash = $1 AND provider = $2 \
         RETURNING nonce, pkce_verifier, expires_at",
    )
    .bind(state_hash)
    .bind(provider)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| OidcFlow {
        nonce: row.get("nonce"),
        pkce_verifier: row.get("pkce_verifier"),
        expires_at: row.get("expires_at"),
    }))
}

/// The account linked to an identity at a provider.
pub async fn user_by_identity(
    conn: &mut PgConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<User>> {
    Ok(sqlx::query(
        "SELECT u.id, u.email, u.name, u.password_hash, u.roles FROM user_identities i \
         JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(user))
}

/// Links an identity at a provider to an account.
pub async fn insert_identity(
    conn: &mut PgConnection,
    issuer: &str,
    subject: &str,
    user_id: Uuid,
    email: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_identities (issuer, subject, user_id, email) VALUES ($1, $2, $3, $4)",
    )
    .bind(issuer)
    .bind(subject)
    .bind(user_id)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(())
}

/// Notes a sign-in through an identity.
pub async fn touch_identity(conn: &mut PgConnection, issuer: &str, subject: &str) -> Result<()> {
    sqlx::query(
        "UPDATE user_identities SET last_login_at = now() WHERE issuer = $1 AND subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .execute(conn)
    .await?;
    Ok(())
}
