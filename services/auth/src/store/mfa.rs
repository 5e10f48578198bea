//! The second factor: TOTP enrolments, recovery codes and the challenges a password login
//! leaves for the code.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// A user's TOTP enrolment.
#[derive(Debug, sqlx::FromRow)]
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
    Ok(sqlx::query_as("SELECT secret, nonce, confirmed_at IS NOT NULL AS confirmed, last_step FROM totp WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
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
