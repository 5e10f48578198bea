//! The operators' API on the admin listener (role `admin`): `POST /admin/orders/rebuild`, and
//! `GET /admin/sagas`, the checkouts in flight (what the operations console shows).

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tienda_kit::{
    json::Json,
    jwt::{RequireRole, Verifier, require_role},
};
use uuid::Uuid;

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
        .route("/admin/sagas", get(sagas))
        .route_layer(axum::middleware::from_fn_with_state(
            RequireRole {
                verifier,
                role: "admin",
            },
            require_role,
        ))
        .with_state(db)
}

/// A saga waiting for a reply, a deadline or a compensation.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct SagaInFlight {
    /// The order.
    pub order_id: Uuid,
    /// Its status.
    pub status: String,
    /// The step the saga waits at (`reserving`, `authorizing`, `committing`, `compensating`).
    pub step: String,
    /// When the order was placed.
    pub placed_at: DateTime<Utc>,
    /// Seconds since then.
    pub age_seconds: f64,
    /// When the step gives up (`None`: compensations are re-sent until answered).
    pub deadline: Option<DateTime<Utc>>,
    /// Compensations sent and not yet answered.
    pub pending_compensations: Vec<String>,
}

/// Sagas in flight.
#[derive(Debug, Serialize)]
pub struct SagasInFlight {
    /// The oldest first, at most 100.
    pub items: Vec<SagaInFlight>,
    /// How many are in flight in all.
    pub total: i64,
}

/// `GET /admin/sagas`: the checkouts in flight, the oldest first (at most 100), with the step
/// each waits at, its age and deadline.
pub async fn sagas(State(db): State<PgPool>) -> Result<Json<SagasInFlight>, Error> {
    let items: Vec<SagaInFlight> = sqlx::query_as(
        "SELECT s.order_id, o.status, s.step, o.created_at AS placed_at, \
                extract(epoch FROM now() - o.created_at)::float8 AS age_seconds, s.deadline, \
                array_remove(ARRAY[CASE WHEN s.void_pending THEN 'void' END, \
                                   CASE WHEN s.release_pending THEN 'release' END, \
                                   CASE WHEN s.restock_pending THEN 'restock' END], NULL) \
                  AS pending_compensations \
         FROM sagas s JOIN orders o ON o.id = s.order_id \
         WHERE s.step IN ('reserving', 'authorizing', 'committing', 'compensating') \
         ORDER BY o.created_at LIMIT 100",
    )
    .fetch_all(&db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas \
         WHERE step IN ('reserving', 'authorizing', 'committing', 'compensating')",
    )
    .fetch_one(&db)
    .await?;
    Ok(Json(SagasInFlight { items, total }))
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
