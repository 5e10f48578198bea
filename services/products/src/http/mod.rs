//! The HTTP API: products, categories, inventory.

pub mod bulk;
pub mod categories;
pub mod inventory;
pub mod products;
pub mod variants;

use axum::{
    Router,
    http::{HeaderMap, header},
    middleware,
};
use sqlx::PgPool;
use tienda_kit::{
    idempotency::{self, Options},
    jwt::{RequireRole, Verifier, require_role},
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::cache::ProductCache;

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// The read cache of single products.
    pub cache: ProductCache,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// Import limits.
    pub limits: Limits,
    /// View counts waiting to be written.
    pub views: std::sync::Arc<crate::analytics::Views>,
    /// Answers kept for `Idempotency-Key` retries.
    pub idempotency: idempotency::Store,
}

/// Import limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body.
    pub import_max_bytes: usize,
    /// Most rows.
    pub import_max_rows: usize,
}

impl AppState {
    /// Whether the request carries a valid admin token (for what admins see beyond others).
    pub async fn is_admin(&self, headers: &HeaderMap) -> bool {
        if !headers.contains_key(header::AUTHORIZATION) {
            return false;
        }
        self.verifier
            .verify_headers(headers)
            .await
            .is_ok_and(|c| c.has_role("admin"))
    }
}

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let admin = OpenApiRouter::new()
        .routes(routes!(products::create))
        .routes(routes!(products::update, products::delete))
        .routes(routes!(categories::create))
        .routes(routes!(categories::update, categories::delete))
        .routes(routes!(bulk::import))
        .routes(routes!(bulk::prices))
        .routes(routes!(bulk::adjustments))
        .routes(routes!(bulk::analytics))
        .routes(routes!(inventory::adjust))
        .merge(
            // Inside the role check, so keys are scoped to the verified caller.
            OpenApiRouter::new()
                .routes(routes!(inventory::reserve))
                .route_layer(idempotency::layer(
                    state.idempotency.clone(),
                    Options::optional(),
                )),
        )
        .routes(routes!(inventory::reservation))
        .routes(routes!(inventory::commit))
        .routes(routes!(inventory::release))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(products::list))
        .routes(routes!(products::get))
        .routes(routes!(variants::lookup))
        .routes(routes!(categories::list))
        .routes(routes!(categories::get))
        .routes(routes!(inventory::stock))
        .merge(admin)
        .with_state(state)
        .split_for_parts()
}

/// The document's head; the operations come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tienda products",
        description = "Catalog, categories, search, inventory and reservations"
    ),
    components(schemas(tienda_kit::Problem))
)]
pub struct ApiDoc;
