//! The operators' API on the admin listener: `POST /admin/orders/rebuild` (role `admin`).

use axum::{Router, extract::State, routing::post};
use serde::Serialize;
use sqlx::PgPool;
use tienda_kit::{
    json::Json,
    jwt::{RequireRole, Verifier, require_role},
};

use crate::{error::Error, store};

/// What a rebuild did.
#[derive(Debug, Serialize)]
pub struct Rebuilt {
    /// Orders rebuilt from their logs.
    pub orders: u64,
}

/// The admin routes, each requiring the `admin` role (401 without a token, 403 without the
/// role).
pub fn router(db: PgPool, verifier: Verifier) -> Router {
    Router::new()
        .route("/admin/orders/rebuild", post(rebuild))
        .route_layer(axum::middleware::from_fn_with_state(
            RequireRole {
                verifier,
                role: "admin",
            },
            require_role,
        ))
        .with_state(db)
}

/// Empties the order and list read models (`orders`, `order_lines`) and rebuilds them from
/// the order event log, in one transaction: all or nothing. The log and the sagas are not
/// touched. Answers how many orders were rebuilt; 409 when an order's log cannot be
/// replayed (nothing changes then).
pub async fn rebuild(State(db): State<PgPool>) -> Result<Json<Rebuilt>, Error> {
    let mut tx = db.begin().await?;
    let orders = store::rebuild(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(orders, "order projections rebuilt from the log");
    Ok(Json(Rebuilt { orders }))
}
