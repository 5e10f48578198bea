//! The HTTP API: the signed-in user's preferences and message history, the one-click
//! unsubscribe link, the provider's callbacks, and for admins delivery search, replay and the
//! suppression list.

pub mod campaigns;
pub mod devices;
pub mod history;
pub mod preferences;
pub mod templates;
pub mod tracking;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, middleware};
use sqlx::PgPool;
use tienda_kit::jwt::{RequireRole, Verifier, authenticate, require_role};
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
    /// Check the provider's callbacks (none: callbacks are refused).
    pub callback_secrets: Arc<CallbackSecrets>,
    /// The templates (previews).
    pub templates: Arc<crate::templates::Templates>,
    /// Where links in messages point (previews).
    pub links: crate::trigger::Links,
    /// Web Push, when configured (subscriptions are checked against its allowed hosts).
    pub webpush: Option<Arc<crate::channel::push::WebPush>>,
    /// The language of people who chose none (campaign audiences, codes).
    pub default_locale: crate::locale::Locale,
    /// Calling codes numbers may have (`NOTIFICATIONS_SMS_COUNTRIES`; empty: any).
    pub sms_countries: Arc<Vec<String>>,
}

impl std::fmt::Debug for CallbackSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} callback secrets", self.0.len())
    }
}

/// The callback secrets, without their values in debug output.
pub struct CallbackSecrets(pub Vec<standardwebhooks::Webhook>);

/// The largest callback body taken.
const CALLBACK_BODY_LIMIT: usize = 64 * 1024;

/// The API and its OpenAPI document, from one list of handlers.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let signed_in = OpenApiRouter::new()
        .routes(routes!(preferences::get, preferences::put))
        .routes(routes!(preferences::verify_phone))
        .routes(routes!(history::mine))
        .routes(routes!(devices::register, devices::list))
        .routes(routes!(devices::remove))
        .route_layer(middleware::from_fn_with_state(
            state.verifier.clone(),
            authenticate,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(history::search))
        .routes(routes!(history::get))
        .routes(routes!(history::replay))
        .routes(routes!(tracking::suppressions))
        .routes(routes!(tracking::lift))
        .routes(routes!(templates::list))
        .routes(routes!(templates::get, templates::save))
        .routes(routes!(templates::version))
        .routes(routes!(templates::preview))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::disable))
        .routes(routes!(webhooks::rotate))
        .routes(routes!(campaigns::create, campaigns::list))
        .routes(routes!(campaigns::get))
        .routes(routes!(campaigns::cancel))
        .route_layer(middleware::from_fn_with_state(
            RequireRole {
                verifier: state.verifier.clone(),
                role: "admin",
            },
            require_role,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(unsubscribe::page, unsubscribe::one_click))
        .routes(routes!(devices::vapid_key))
        // Providers authenticate by signature over the raw body, within a bound.
        .merge(
            OpenApiRouter::new()
                .routes(routes!(tracking::callback))
                .layer(DefaultBodyLimit::max(CALLBACK_BODY_LIMIT)),
        )
        .merge(signed_in)
        .merge(admin)
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
