//! The signed-in user's sessions (devices): list, end one, end all others.

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use uuid::Uuid;

use super::AppState;
use crate::{error::Error, store};

fn user_id(claims: &Claims) -> Result<Uuid, Error> {
    claims.sub.parse().map_err(|_| Error::InvalidCredentials)
}

/// A session in the list: the row, and whether it is the one asking.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionItem {
    /// The session.
    #[serde(flatten)]
    pub session: store::sessions::SessionRow,
    /// Whether this is the session of the token that asked.
    pub current: bool,
}

/// The signed-in user's live sessions: one page holds them all (`next_cursor` is always null;
/// it is there so the shape matches every other list).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionPage {
    /// Newest first.
    pub items: Vec<SessionItem>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// Live sessions, newest first.
#[utoipa::path(get, path = "/v1/auth/sessions", tag = "sessions",
    responses((status = 200, body = SessionPage), (status = 401, body = Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<Json<SessionPage>, Error> {
    let mut conn = state.db.acquire().await?;
    let sessions = store::sessions::sessions(&mut conn, user_id(&claims)?).await?;
    let current = claims.sid.clone().unwrap_or_default();
    let items = sessions
        .into_iter()
        .map(|session| SessionItem {
            current: session.id.to_string() == current,
            session,
        })
        .collect();
    Ok(Json(SessionPage {
        items,
        next_cursor: None,
    }))
}

/// Ends one session (its refresh tokens stop working; its access tokens expire on their own).
#[utoipa::path(delete, path = "/v1/auth/sessions/{id}", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id")),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn end(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    if store::sessions::revoke_own_session(&mut conn, user_id(&claims)?, id, "ended by user")
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no live session {id} of yours")))
    }
}

/// Ends every session but the current one ("sign out other devices").
#[utoipa::path(delete, path = "/v1/auth/sessions", tag = "sessions",
    responses((status = 204)), security(("bearer" = [])))]
pub async fn end_others(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
) -> Result<StatusCode, Error> {
    let keep = claims.sid.as_deref().and_then(|s| s.parse().ok());
    let mut conn = state.db.acquire().await?;
    store::sessions::revoke_other_sessions(
        &mut conn,
        user_id(&claims)?,
        keep,
        "ended from another device",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
