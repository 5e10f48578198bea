//! The HTTP API: admins read payments; customers answer sandbox 3-D Secure challenges.

pub mod analytics;
pub mod challenges;
pub mod fraud;
pub mod payments;

use axum::{Router, middleware};
use sqlx::PgPool;
use tienda_kit::jwt::{RequireRole, Verifier, require_role};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// Checks access tokens.
    pub verifier: Verifier,
}

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let admin = OpenApiRouter::new()
        .routes(routes!(payments::list))
        .routes(routes!(payments::get))
        .routes(routes!(fraud::reviews))
        .routes(routes!(analytics::analytics))
        .routes(routes!(fraud::decide))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // The challenge's secret token is the customer's credential (guests have no account).
        .routes(routes!(challenges::answer))
        .merge(admin)
        .with_state(state)
        .split_for_parts()
}

/// The document's head; the operations come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tienda payments",
        description = "Payments of the order saga: authorizations, captures, voids, refunds"
    ),
    components(schemas(tienda_kit::Problem))
)]
pub struct ApiDoc;
