//! The HTTP API: checkout and orders; the operators' routes on the admin listener.

pub mod admin;
pub mod cart;
pub mod checkout;
pub mod orders;
pub mod returns;
pub mod timeline;

use axum::{Router, middleware};
use sqlx::PgPool;
use tienda_kit::{
    idempotency::{self, Options},
    jwt::{Claims, Verifier, authenticate, authenticate_optional},
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{catalog::Catalog, error::Error, saga::Timeouts};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// Answers kept for `Idempotency-Key` retries.
    pub idempotency: idempotency::Store,
    /// Prices from products.
    pub catalog: Catalog,
    /// The saga's step deadlines.
    pub timeouts: Timeouts,
    /// How long after placing an order its customer may cancel it.
    pub cancel_window: std::time::Duration,
    /// How long after delivery its customer may return it.
    pub return_window: std::time::Duration,
    /// Wakes open order timelines.
    pub feed: crate::timeline::Feed,
    /// Ends open event streams when the process stops.
    pub shutdown: tienda_kit::Shutdown,
}

/// The customer a token speaks for.
pub fn customer_id(claims: &Claims) -> Result<Uuid, Error> {
    claims
        .sub
        .parse()
        .map_err(|_| Error::Forbidden("This token does not belong to a customer account.".into()))
}

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let checkout = OpenApiRouter::new()
        .routes(routes!(checkout::checkout))
        // Inside authentication, so keys are scoped to the verified customer.
        .route_layer(idempotency::layer(
            state.idempotency.clone(),
            Options::required(),
        ));
    // Open to guests (a Cart-Token) and to signed-in customers.
    let cart = OpenApiRouter::new()
        .routes(routes!(cart::get, cart::create, cart::patch, cart::clear))
        .routes(routes!(cart::add_item))
        .routes(routes!(cart::set_item, cart::remove_item))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate_optional,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(checkout)
        .routes(routes!(orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::cancel))
        .routes(routes!(orders::ship))
        .routes(routes!(orders::deliver))
        .routes(routes!(timeline::timeline))
        .routes(routes!(returns::list, returns::create))
        .routes(routes!(returns::receive))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ))
        .merge(cart)
        .with_state(state)
        .split_for_parts()
}

/// The document's head; the operations come from [`router`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tienda orders",
        description = "Checkout, orders and the saga that confirms them"
    ),
    components(schemas(tienda_kit::Problem))
)]
pub struct ApiDoc;
