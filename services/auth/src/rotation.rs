//! Refresh-token rotation. A refresh token is single use: redeeming it marks it used and the
//! caller issues the next one in the same session. Presenting a used token again means it was
//! stolen or copied, so its whole session is revoked.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    error::Result,
    store::{
        accounts::{self, User},
        sessions,
    },
};

/// What redeeming a refresh token came to.
#[derive(Debug)]
pub enum Redeemed {
    /// A live token, now used: issue the next pair in `session` for `user`.
    Valid {
        /// The session the next token belongs to.
        session: Uuid,
        /// The account.
        user: User,
    },
    /// A used token presented again: its session is revoked (commit that) and the answer is
    /// the same as for an invalid token.
    Reused {
        /// The revoked session.
        session: Uuid,
        /// Its account.
        user: Uuid,
    },
    /// Unknown, expired, of a revoked session, or of an account that is gone.
    Invalid,
}

/// Redeems the refresh token whose hash is `hash`, in the caller's transaction.
pub async fn redeem(tx: &mut PgConnection, hash: &[u8]) -> Result<Redeemed> {
    let Some(token) = sessions::lock_refresh_token(tx, hash).await? else {
        return Ok(Redeemed::Invalid);
    };
    if token.session_revoked {
        return Ok(Redeemed::Invalid);
    }
    if token.used_at.is_some() {
        sessions::revoke_session(tx, token.session_id, "refresh token reused").await?;
        return Ok(Redeemed::Reused {
            session: token.session_id,
            user: token.user_id,
        });
    }
    if token.expires_at <= chrono::Utc::now() {
        return Ok(Redeemed::Invalid);
    }
    let Some(user) = accounts::user_by_id(tx, token.user_id).await? else {
        return Ok(Redeemed::Invalid);
    };
    sessions::mark_used(tx, token.id).await?;
    sessions::touch_session(tx, token.session_id).await?;
    Ok(Redeemed::Valid {
        session: token.session_id,
        user,
    })
}
