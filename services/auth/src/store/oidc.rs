//! OpenID Connect: started sign-ins (`oidc_flows`) and identities at providers linked to
//! accounts (`user_identities`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::accounts::User;
use crate::error::Result;

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
#[derive(Debug, sqlx::FromRow)]
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
    Ok(sqlx::query_as(
        "DELETE FROM oidc_flows WHERE state_hash = $1 AND provider = $2 \
         RETURNING nonce, pkce_verifier, expires_at",
    )
    .bind(state_hash)
    .bind(provider)
    .fetch_optional(conn)
    .await?)
}

/// The account linked to an identity at a provider.
pub async fn user_by_identity(
    conn: &mut PgConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<User>> {
    Ok(sqlx::query_as(
        "SELECT u.id, u.email, u.name, u.password_hash, u.roles, \
         (u.email_verified_at IS NOT NULL) AS email_verified FROM user_identities i \
         JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .fetch_optional(conn)
    .await?)
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
