//! `GET /.well-known/jwks.json`.

use axum::{extract::State, http::header, response::IntoResponse};

use super::AppState;
use crate::error::Result;

/// The public keys that verify access tokens (current and recently rotated).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks(State(state): State<AppState>) -> Result<impl IntoResponse> {
    let set = state.keys.jwks().await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(set),
    ))
}
