//! The HTTP API: one router per resource.

pub mod accounts;
pub mod jwks;
pub mod mfa;
pub mod passwords;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{delete, get, post, put},
};
use sqlx::PgPool;
use tienda_kit::jwt::{RequireRole, Verifier, authenticate, require_role};
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
        .route(
            "/v1/auth/sessions",
            get(sessions::list).delete(sessions::end_others),
        )
        .route("/v1/auth/sessions/{id}", delete(sessions::end))
        .route("/v1/auth/password", post(passwords::change))
        .route("/v1/auth/mfa/totp", post(mfa::enroll).delete(mfa::disable))
        .route("/v1/auth/mfa/totp/verify", post(mfa::verify))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    let admin = Router::new()
        .route("/v1/auth/users/{id}/roles", put(users::set_roles))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    Router::new()
        .route("/v1/auth/register", post(accounts::register))
        .route("/v1/auth/login", post(accounts::login))
        .route("/v1/auth/login/mfa", post(mfa::login))
        .route("/v1/auth/refresh", post(accounts::refresh))
        .route("/v1/auth/password/reset", post(passwords::request_reset))
        .route(
            "/v1/auth/password/reset/confirm",
            post(passwords::confirm_reset),
        )
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .merge(authenticated)
        .merge(admin)
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
