//! `/v1/orders/{id}/returns`: a customer sends goods back after delivery; an admin records
//! their arrival, which restocks them and refunds their price.

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    orders::{order_id, require_admin},
};
use crate::{
    aftersale::{self, Return},
    domain::{
        checkout::{FieldErrors, MAX_LINES, check_lines, no_control},
        log::ReturnLine,
    },
    error::Error,
    store::{self, OrderRow},
};

/// `POST /v1/orders/{id}/returns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    /// What goes back: 1-50 lines, one per SKU of the order.
    pub items: Vec<ReturnLine>,
    /// Why, 1-500 characters.
    pub reason: String,
}

/// The order's returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReturnList {
    /// Oldest first.
    pub items: Vec<Return>,
}

impl ReturnRequest {
    fn validate(mut self) -> Result<Self, FieldErrors> {
        let mut fields = FieldErrors::new();
        self.reason = self.reason.trim().to_owned();
        if no_control(&mut fields, "reason", &self.reason) {
            let n = self.reason.chars().count();
            if !(1..=500).contains(&n) {
                fields.push(("reason".into(), "must be 1 to 500 characters".into()));
            }
        }
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            fields.push(("items".into(), format!("must have 1 to {MAX_LINES} lines")));
        }
        check_lines(
            &mut fields,
            self.items.iter().map(|l| (l.sku.as_str(), l.quantity)),
            "return",
        );
        if fields.is_empty() {
            Ok(self)
        } else {
            Err(fields)
        }
    }
}

/// The order if the caller owns it or is an admin (else not found), locked with `lock` — only
/// once the caller is known to be allowed, so nobody can hold another's order.
async fn owned_or_admin(
    conn: &mut sqlx::PgConnection,
    claims: &Claims,
    id: &str,
    lock: bool,
) -> Result<(OrderRow, bool), Error> {
    let not_found = || Error::NotFound(format!("No order {id}."));
    let order_id = order_id(id)?;
    let order = store::get_row(conn, order_id)
        .await?
        .ok_or_else(not_found)?;
    let owner = claims.sub.parse::<Uuid>().ok() == Some(order.customer_id);
    if !owner && !claims.has_role("admin") {
        return Err(not_found());
    }
    if !lock {
        return Ok((order, owner));
    }
    let order = store::lock(conn, order_id).await?.ok_or_else(not_found)?;
    Ok((order, owner))
}

/// The order's returns (its owner's or an admin's).
#[utoipa::path(get, path = "/v1/orders/{id}/returns", tag = "returns",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = ReturnList), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<ReturnList>, Error> {
    let mut tx = state.db.begin().await?;
    let (order, _) = owned_or_admin(&mut tx, &claims, &id, false).await?;
    let items = aftersale::returns(&mut tx, order.id).await?;
    tx.commit().await?;
    Ok(Json(ReturnList { items }))
}

/// Asks to return goods of a delivered order: its owner within the return window
/// (`ORDERS_RETURN_WINDOW_DAYS`, default 30 days after delivery), an admin any time. No more
/// units than were bought and are not in another return. The refund follows when an admin
/// records the goods' arrival.
#[utoipa::path(post, path = "/v1/orders/{id}/returns", tag = "returns", request_body = ReturnRequest,
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 201, body = Return, headers(("Location" = String))),
              (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Not delivered, or the return window has passed"),
              (status = 422, body = Problem, description = "Invalid fields, SKUs not in the order, more units than can be returned")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    Json(request): Json<ReturnRequest>,
) -> Result<Response, Error> {
    let request = request.validate().map_err(Error::Invalid)?;
    let mut tx = state.db.begin().await?;
    let (mut order, owner) = owned_or_admin(&mut tx, &claims, &id, true).await?;
    if owner && !claims.has_role("admin") {
        let window =
            chrono::Duration::from_std(state.return_window).unwrap_or(chrono::Duration::MAX);
        let closed = order
            .delivered_at
            .and_then(|at| at.checked_add_signed(window))
            .is_some_and(|closes| chrono::Utc::now() >= closes);
        if closed {
            return Err(Error::Conflict(format!(
                "The {} days to return this order after its delivery have passed.",
                state.return_window.as_secs() / 86_400
            )));
        }
    }
    let created =
        aftersale::request_return(&mut tx, &mut order, &request.items, &request.reason).await?;
    tx.commit().await?;
    let location = format!("/v1/orders/{}/returns/{}", order.id, created.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

/// Records that a return's goods arrived (admins only): they are restocked and their price
/// refunded (up to what was captured and not yet refunded).
#[utoipa::path(post, path = "/v1/orders/{id}/returns/{return_id}/receive", tag = "returns",
    params(("id" = Uuid, Path, description = "The order's id"),
           ("return_id" = Uuid, Path, description = "The return's id")),
    responses((status = 200, body = Return), (status = 401, body = Problem),
              (status = 403, body = Problem, description = "Not an admin"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Received before")),
    security(("bearer" = [])))]
pub async fn receive(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path((id, return_id)): Path<(String, String)>,
) -> Result<Json<Return>, Error> {
    require_admin(&claims)?;
    let return_id = Uuid::try_parse(&return_id)
        .map_err(|_| Error::NotFound(format!("No return {return_id}.")))?;
    let mut tx = state.db.begin().await?;
    let (mut order, _) = owned_or_admin(&mut tx, &claims, &id, true).await?;
    let received =
        aftersale::receive_return(&mut tx, &mut order, return_id, state.timeouts).await?;
    tx.commit().await?;
    Ok(Json(received))
}
