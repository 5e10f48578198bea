//! Sessions and their refresh tokens: a session is a family of single-use refresh tokens,
//! revoked together.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

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
#[derive(Debug, sqlx::FromRow)]
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
    #[sqlx(rename = "revoked")]
    pub session_revoked: bool,
}

/// Finds a refresh token by hash and locks it and its session.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<PresentedToken>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.session_id, s.user_id, t.used_at, t.expires_at, s.revoked_at IS NOT NULL AS revoked \
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1 FOR UPDATE",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
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
    Ok(sqlx::query_as(
        "SELECT id, created_at, last_used_at, user_agent FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?)
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
