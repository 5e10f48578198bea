//! Accounts (`users`): who they are, their password hash and their roles.

use sqlx::PgConnection;
use tienda_kit::constraint;
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    role::Role,
};

/// An account.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    pub roles: Vec<Role>,
    /// Whether the address is verified (a link sent to it was followed, a provider vouched
    /// for it, a reset link reached it, or configuration made the account).
    pub email_verified: bool,
}

const COLUMNS: &str =
    "id, email, name, password_hash, roles, (email_verified_at IS NOT NULL) AS email_verified";

/// Inserts an account; a taken email is [`Error::EmailTaken`].
pub async fn create_user(conn: &mut PgConnection, user: &User) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, email_verified_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(&user.roles)
    .bind(user.email_verified)
    .execute(conn)
    .await
    .map_err(|e| constraint::translate(e, &[("users_email_key", || Error::EmailTaken)]))?;
    Ok(())
}

/// Inserts an account unless its email is taken; `false` when taken (nothing changed, and the
/// transaction stays usable).
pub async fn create_user_if_new(conn: &mut PgConnection, user: &User) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, roles, email_verified_at) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(&user.roles)
    .bind(user.email_verified)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Marks the address of `user_id` verified, if it is still `email`; `false` otherwise.
pub async fn mark_verified(conn: &mut PgConnection, user_id: Uuid, email: &str) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), \
         updated_at = now() WHERE id = $1 AND email = $2",
    )
    .bind(user_id)
    .bind(email)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// An account by email.
pub async fn user_by_email(conn: &mut PgConnection, email: &str) -> Result<Option<User>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE email = $1"
    )))
    .bind(email)
    .fetch_optional(conn)
    .await?)
}

/// An account by id.
pub async fn user_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Replaces a user's roles.
pub async fn set_roles(conn: &mut PgConnection, user_id: Uuid, roles: &[Role]) -> Result<bool> {
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

/// Removes a user's password (the account then signs in only through a provider, or after a
/// reset).
pub async fn clear_password(conn: &mut PgConnection, user_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE users SET password_hash = NULL, updated_at = now() WHERE id = $1")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that the owner of `user_id` is being told of a registration attempt, unless they
/// were told within the hour; whether to tell them now.
pub async fn note_registration_attempt(conn: &mut PgConnection, user_id: Uuid) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE users SET registration_notice_at = now() WHERE id = $1 \
         AND (registration_notice_at IS NULL OR registration_notice_at < now() - interval '1 hour')",
    )
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}
