//! Sessions and their refresh tokens: a session is a family of single-use refresh tokens,
//! revoked together.

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};
use tienda_events::{Envelope, user::UserSessionsRevoked};
use uuid::Uuid;

use crate::error::Result;

/// Revokes the sessions `sql` selects (it must return `(user_id, id)` of each session it
/// revoked) and announces them (`user.sessions_revoked`, through the outbox) in one
/// transaction — a savepoint inside the caller's — so every service stops honouring their
/// access tokens: a revocation is never stored without being announced.
async fn revoke_and_announce<'q>(
    conn: &mut PgConnection,
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, (Uuid, Uuid), sqlx::postgres::PgArguments>,
    reason: &str,
) -> Result<Vec<Uuid>> {
    let mut tx = conn.begin().await?;
    let revoked: Vec<(Uuid, Uuid)> = query.fetch_all(&mut *tx).await?;
    let mut by_user: std::collections::BTreeMap<Uuid, Vec<Uuid>> = Default::default();
    for (user, session) in &revoked {
        by_user.entry(*user).or_default().push(*session);
    }
    for (user_id, session_ids) in by_user {
        let event = UserSessionsRevoked {
            user_id,
            session_ids,
            reason: reason.to_owned(),
        };
        tienda_kit::outbox::enqueue(&mut tx, Envelope::new("auth", event)).await?;
    }
    tx.commit().await?;
    Ok(revoked.into_iter().map(|(_, s)| s).collect())
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
    let query = sqlx::query_as(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 \
         WHERE id = $1 AND revoked_at IS NULL RETURNING user_id, id",
    )
    .bind(session_id)
    .bind(reason);
    revoke_and_announce(conn, query, reason).await?;
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
    let query = sqlx::query_as(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3 \
         WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING user_id, id",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(reason);
    Ok(revoke_and_announce(conn, query, reason).await?.len() == 1)
}

/// Revokes every live session of a user except `keep`; returns how many.
pub async fn revoke_other_sessions(
    conn: &mut PgConnection,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<u64> {
    let query = sqlx::query_as(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $3 \
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2) \
         RETURNING user_id, id",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason);
    Ok(revoke_and_announce(conn, query, reason).await?.len() as u64)
}
