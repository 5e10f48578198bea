//! `/v1/inventory`: stock per SKU, admin adjustments, and reservations.

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use uuid::Uuid;

use super::AppState;
use crate::{
    error::Error,
    inventory::{self, Adjustment, Reservation, ReservationRequest, Stock},
};

/// A SKU's stock.
#[utoipa::path(get, path = "/v1/inventory/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "The SKU")),
    responses((status = 200, body = Stock), (status = 404, body = Problem)))]
pub async fn stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Stock>, Error> {
    let mut conn = state.db.acquire().await?;
    inventory::stock(&mut conn, &sku)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("No SKU {sku} in the catalog.")))
}

/// Sets a SKU's on-hand stock after a count (admin), recorded in the stock ledger with the
/// reason: `inventory.adjusted` (and `inventory.low_stock` when it crosses the threshold).
#[utoipa::path(put, path = "/v1/inventory/{sku}", tag = "inventory", request_body = Adjustment,
    params(("sku" = String, Path, description = "The SKU")),
    responses((status = 200, body = Stock), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Below the reserved units"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn adjust(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Path(sku): Path<String>,
    Json(adjustment): Json<Adjustment>,
) -> Result<Json<Stock>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(
        inventory::adjust(&mut conn, &sku, &adjustment, &admin.sub).await?,
    ))
}

/// Holds stock (admin; the order saga uses the `tienda.inventory.cmd.reserve` command): every
/// line or none. Idempotent by `reservation_id`: a retry answers with the reservation as it
/// is and reserves nothing more; the same id with other items is 422. An optional
/// `Idempotency-Key` (kept 24 h) replays the first answer exactly, marked
/// `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/v1/inventory/reservations", tag = "inventory",
    request_body = ReservationRequest,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Optional; 1-255 characters, e.g. a UUID. A retry with the same key \
                           and body gets the first answer again; another body is 422.")),
    responses((status = 201, body = Reservation,
               headers(("Idempotent-Replayed" = bool,
                        description = "`true` when this is the stored answer to an earlier \
                                       request with the same Idempotency-Key"))),
              (status = 400, body = Problem, description = "A malformed Idempotency-Key"),
              (status = 409, body = Problem, description = "Short: `shortages` lists the SKUs; \
                  or a request with this Idempotency-Key is still running (`Retry-After`)"),
              (status = 422, body = Problem, description = "Invalid, the reservation_id was \
                  used with other items, or the Idempotency-Key was used with another body")),
    security(("bearer" = [])))]
pub async fn reserve(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Json(request): Json<ReservationRequest>,
) -> Result<(StatusCode, Json<Reservation>), Error> {
    let mut conn = state.db.acquire().await?;
    let (reservation, _) = inventory::reserve(&mut conn, &request).await?;
    Ok((StatusCode::CREATED, Json(reservation)))
}

/// A reservation (admin).
#[utoipa::path(get, path = "/v1/inventory/reservations/{id}", tag = "inventory",
    params(("id" = Uuid, Path, description = "The reservation's id")),
    responses((status = 200, body = Reservation), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn reservation(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Error> {
    let mut conn = state.db.acquire().await?;
    inventory::load(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("No reservation {id}.")))
}

/// Sells a held reservation (admin): its units leave on-hand. Idempotent.
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/commit", tag = "inventory",
    params(("id" = Uuid, Path, description = "The reservation's id")),
    responses((status = 200, body = Reservation), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Released or expired")),
    security(("bearer" = [])))]
pub async fn commit(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(inventory::commit(&mut conn, id).await?.0))
}

/// Gives a held reservation's units back (admin). Idempotent.
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/release", tag = "inventory",
    params(("id" = Uuid, Path, description = "The reservation's id")),
    responses((status = 200, body = Reservation), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Committed")),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
) -> Result<Json<Reservation>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(inventory::release(&mut conn, id).await?.0))
}
