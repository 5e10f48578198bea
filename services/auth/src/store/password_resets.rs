//! Password-reset tokens (`password_resets`): single use, short-lived, stored hashed.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

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

/// Voids every unused reset token of `user_id`: a newer request, a password change or a
/// completed reset leaves no older link working.
pub async fn void_resets(conn: &mut PgConnection, user_id: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE password_resets SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}
