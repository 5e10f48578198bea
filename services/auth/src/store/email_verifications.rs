//! Email-verification tokens (`email_verifications`): single use, short-lived, stored hashed,
//! bound to the address they were sent to.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// Stores a verification token's hash for `email`, voiding the account's older ones (only the
/// newest link works).
pub async fn insert(
    conn: &mut PgConnection,
    user_id: Uuid,
    email: &str,
    hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<()> {
    void(conn, user_id).await?;
    sqlx::query(
        "INSERT INTO email_verifications (token_hash, user_id, email, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(user_id)
    .bind(email)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Consumes a live token: its account and the address it was sent to, or None if unknown,
/// used or expired.
pub async fn consume(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "UPDATE email_verifications SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() \
         RETURNING user_id, email",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

/// Voids every unused token of `user_id`.
pub async fn void(conn: &mut PgConnection, user_id: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE email_verifications SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}
