//! Failed sign-ins per account or client IP (`login_failures`) and the locks they earn.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

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
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO login_failures (key, failures) VALUES ($1, 1) \
         ON CONFLICT (key) DO UPDATE SET failures = login_failures.failures + 1, updated_at = now() \
         RETURNING failures",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
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
