//! The HTTP API: one router per resource.

pub mod accounts;
pub mod jwks;
pub mod mfa;
pub mod oidc;
pub mod passwords;
pub mod sessions;
pub mod users;

use std::sync::Arc;

use axum::{Router, middleware};
use sqlx::PgPool;
use tienda_kit::jwt::{RequireRole, Verifier, authenticate, require_role};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

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
    /// Password hashing, bounded by its memory budget.
    pub hasher: crate::password::Hasher,
    /// The configured OpenID Connect providers.
    pub oidc: crate::oidc::Providers,
    /// Seals the tokens events carry.
    pub sealer: Arc<tienda_kit::seal::Sealer>,
}

/// The API and its OpenAPI document, both from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let authenticated = OpenApiRouter::new()
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::logout))
        .routes(routes!(sessions::list, sessions::end_others))
        .routes(routes!(sessions::end))
        .routes(routes!(passwords::change))
        .routes(routes!(accounts::resend_verification))
        .routes(routes!(mfa::enroll, mfa::disable))
        .routes(routes!(mfa::verify))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(users::set_roles))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(mfa::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(passwords::request_reset))
        .routes(routes!(passwords::confirm_reset))
        .routes(routes!(accounts::verify_email))
        .routes(routes!(oidc::start))
        .routes(routes!(oidc::callback))
        .routes(routes!(jwks::jwks))
        .merge(authenticated)
        .merge(admin)
        .with_state(state)
        .split_for_parts()
}

/// The document's head; the operations come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tienda auth",
        description = "Accounts, sessions, passwords, TOTP, OpenID Connect sign-in, signing keys"
    ),
    components(schemas(tienda_kit::Problem))
)]
pub struct ApiDoc;
