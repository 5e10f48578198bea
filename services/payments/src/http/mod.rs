//! The HTTP API: admins read payments; customers answer 3-D Secure challenges; providers send
//! webhooks.

pub mod analytics;
pub mod challenges;
pub mod fraud;
pub mod invoices;
pub mod payments;
pub mod reconciliations;
pub mod webhooks;

use std::{collections::BTreeMap, sync::Arc};

use axum::{Router, extract::DefaultBodyLimit, middleware};
use sqlx::PgPool;
use tienda_kit::jwt::{RequireRole, Verifier, authenticate, require_role};
use tokio::sync::Notify;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{provider::Providers, webhooks::WebhookSecrets};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: PgPool,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// The providers (challenges completed at the provider are checked with it).
    pub providers: Providers,
    /// Webhook secrets by provider; a provider absent here takes no webhooks.
    pub webhook_secrets: Arc<BTreeMap<&'static str, WebhookSecrets>>,
    /// Wakes the webhook worker when an event is stored.
    pub webhook_wake: Arc<Notify>,
    /// Wakes the pending-refund worker when a webhook says a refund changed.
    pub refund_wake: Arc<Notify>,
}

/// The largest webhook body taken (Stripe's events are a few KiB).
const WEBHOOK_BODY_LIMIT: usize = 256 * 1024;

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let admin = OpenApiRouter::new()
        .routes(routes!(payments::list))
        .routes(routes!(payments::get))
        .routes(routes!(fraud::reviews))
        .routes(routes!(analytics::analytics))
        .routes(routes!(reconciliations::get, reconciliations::run))
        .routes(routes!(fraud::decide))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    // Customers read their own invoices; admins anyone's.
    let customer = OpenApiRouter::new()
        .routes(routes!(invoices::list))
        .routes(routes!(invoices::get))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // The challenge's secret token is the customer's credential (guests have no account).
        .routes(routes!(challenges::show, challenges::answer))
        // Providers authenticate by signature; their bodies are read raw, within a bound.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(webhooks::receive))
                .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .merge(admin)
        .merge(customer)
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
