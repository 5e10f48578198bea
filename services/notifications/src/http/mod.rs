//! The HTTP API: the signed-in user's preferences, and the one-click unsubscribe link.

pub mod preferences;
pub mod unsubscribe;

use axum::{Router, middleware};
use sqlx::PgPool;
use tienda_kit::jwt::{Verifier, authenticate};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::unsubscribe::Signer;

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// Checks unsubscribe tokens.
    pub signer: Signer,
}

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let signed_in = OpenApiRouter::new()
        .routes(routes!(preferences::get, preferences::put))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(unsubscribe::page, unsubscribe::one_click))
        .merge(signed_in)
        .with_state(state)
        .split_for_parts()
}

/// The document's head; the operations come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tienda notifications",
        description = "Messages about accounts, orders and payments; preferences and unsubscribe"
    ),
    components(schemas(tienda_kit::Problem))
)]
pub struct ApiDoc;
