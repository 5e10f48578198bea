//! The HTTP API: one router per resource.

pub mod accounts;
pub mod jwks;

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{get, post},
};
use sqlx::PgPool;
use tienda_kit::jwt::{Verifier, authenticate};
use utoipa::OpenApi;

use crate::{config::Config, keys::KeyRing};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// Signing keys.
    pub keys: Arc<KeyRing>,
    /// Configuration.
    pub config: Arc<Config>,
    /// Verifies this service's own access tokens (keys read from the key ring, not over HTTP).
    pub verifier: Verifier,
    /// An Argon2id hash checked for unknown emails, so they take the same time as wrong
    /// passwords.
    pub dummy_hash: Arc<String>,
}

/// The API.
pub fn router(state: AppState) -> Router {
    let authenticated = Router::new()
        .route("/v1/auth/me", get(accounts::me))
        .route("/v1/auth/logout", post(accounts::logout))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    Router::new()
        .route("/v1/auth/register", post(accounts::register))
        .route("/v1/auth/login", post(accounts::login))
        .route("/v1/auth/refresh", post(accounts::refresh))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .merge(authenticated)
        .with_state(state)
}

/// The OpenAPI document of [`router`].
#[derive(OpenApi)]
#[openapi(
    info(title = "Tienda auth", description = "Accounts, tokens and keys"),
    paths(
        accounts::register,
        accounts::login,
        accounts::refresh,
        accounts::logout,
        accounts::me,
        jwks::jwks
    ),
    components(schemas(
        accounts::RegisterRequest,
        accounts::LoginRequest,
        accounts::RefreshRequest,
        accounts::TokenPair,
        accounts::Me,
        tienda_kit::Problem
    ))
)]
pub struct ApiDoc;
