//! `/v1/orders`: a customer's orders.

use axum::{
    Extension,
    extract::{Path, Query, State},
};
use tienda_kit::{Problem, json::Json, jwt::Claims, outbox};
use utoipa::IntoParams;
use uuid::Uuid;

use super::{AppState, customer_id};
use crate::{
    domain::{
        log::OrderEvent,
        saga::{CancelRefused, Requester, cancel_requested},
        shipment::ShipRequest,
        status::Status,
    },
    error::Error,
    saga,
    store::{self, Order, OrderFilter, OrderPage, OrderRow, SagaKey},
};

/// `GET /v1/orders` parameters.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only orders in this status (`confirmed`, `cancelled`, ...).
    pub status: Option<String>,
    /// Only orders placed at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Only orders placed before this time (RFC 3339).
    pub to: Option<String>,
    /// Admins only: one customer's orders.
    pub customer_id: Option<Uuid>,
}

fn timestamp(
    fields: &mut Vec<(String, String)>,
    key: &str,
    value: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    match chrono::DateTime::parse_from_rfc3339(value) {
        Ok(at) => Some(at.to_utc()),
        Err(_) => {
            fields.push((
                key.to_owned(),
                "must be an RFC 3339 time such as 2026-12-01T00:00:00Z".to_owned(),
            ));
            None
        }
    }
}

impl ListParams {
    /// Reads the query string into a filter and a page; unknown parameters, repeated ones and
    /// bad values are field errors.
    pub fn parse(pairs: &[(String, String)]) -> Result<(OrderFilter, Option<Uuid>, i64), Error> {
        let mut filter = OrderFilter::default();
        let mut before = None;
        let mut limit = 20;
        let mut fields = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in pairs {
            if !seen.insert(key.as_str()) {
                fields.push((key.clone(), "must be given once".to_owned()));
                continue;
            }
            match key.as_str() {
                "limit" => match value.parse::<i64>() {
                    Ok(v) if (1..=100).contains(&v) => limit = v,
                    _ => fields.push((key.clone(), "must be 1 to 100".to_owned())),
                },
                "cursor" => match Uuid::try_parse(value) {
                    Ok(id) => before = Some(id),
                    Err(_) => fields.push((
                        key.clone(),
                        "must be the next_cursor of a previous page".to_owned(),
                    )),
                },
                "status" => match serde_json::from_value::<Status>(value.as_str().into()) {
                    Ok(status) => filter.status = Some(status),
                    Err(_) => fields.push((
                        key.clone(),
                        "must be an order status: pending, reserved, awaiting_payment_action, \
                         authorized, confirmed, shipped, delivered, cancelled or refunded"
                            .to_owned(),
                    )),
                },
                "from" => filter.from = timestamp(&mut fields, key, value),
                "to" => filter.to = timestamp(&mut fields, key, value),
                "customer_id" => match Uuid::try_parse(value) {
                    Ok(id) => filter.customer_id = Some(id),
                    Err(_) => fields.push((key.clone(), "must be a customer's id".to_owned())),
                },
                _ => fields.push((
                    key.clone(),
                    "is not a parameter of this endpoint".to_owned(),
                )),
            }
        }
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            fields.push(("to".to_owned(), "must be after from".to_owned()));
        }
        if fields.is_empty() {
            Ok((filter, before, limit))
        } else {
            Err(Error::Invalid(fields))
        }
    }
}

/// Orders, newest first, a page at a time: a customer's own; for admins every order, or one
/// customer's with `customer_id`. Filters: `status`, `from`, `to`.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListParams),
    responses((status = 200, body = OrderPage), (status = 401, body = Problem),
              (status = 403, body = Problem, description = "customer_id without the admin role"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<OrderPage>, Error> {
    let (mut filter, before, limit) = ListParams::parse(&pairs)?;
    if !claims.has_role("admin") {
        if filter.customer_id.is_some() {
            return Err(Error::Forbidden(
                "Only admins list other customers' orders; leave out customer_id.".into(),
            ));
        }
        filter.customer_id = Some(customer_id(&claims)?);
    }
    let mut conn = state.db.acquire().await?;
    let mut items = store::list(&mut conn, &filter, before, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|o| o.id.simple().to_string())
    } else {
        None
    };
    Ok(Json(OrderPage { items, next_cursor }))
}

/// One order: its owner's, or any for an admin. Another customer's order is not found. While
/// it is `awaiting_payment_action`, its owner also sees `payment_action`: the URL where the
/// 3-D Secure challenge is completed, and until when.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<Order>, Error> {
    let not_found = || Error::NotFound(format!("No order {id}."));
    let id = Uuid::try_parse(&id).map_err(|_| not_found())?;
    let mut conn = state.db.acquire().await?;
    let mut order = store::get(&mut conn, id).await?.ok_or_else(not_found)?;
    let owner = claims.sub.parse::<Uuid>().ok() == Some(order.customer_id);
    if !owner && !claims.has_role("admin") {
        return Err(not_found());
    }
    if !owner {
        // The challenge is the customer's to complete.
        order.payment_action = None;
    }
    Ok(Json(order))
}

pub(crate) fn order_id(id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id).map_err(|_| Error::NotFound(format!("No order {id}.")))
}

pub(crate) fn require_admin(claims: &Claims) -> Result<(), Error> {
    if claims.has_role("admin") {
        Ok(())
    } else {
        Err(Error::Forbidden("Only an admin may do this.".into()))
    }
}

/// Cancels an order. Its owner may, while it is not shipped and within the cancellation
/// window (`ORDERS_CANCEL_WINDOW_SECONDS`, default 30 minutes after placing it); an admin may
/// any time before delivery. What the saga holds is undone: the reservation released (while
/// the stock is only reserved), the payment authorization voided (both re-sent until
/// answered); `order.cancelled` is published with reason `customer_requested` or
/// `admin_requested`. Another customer's order is not found.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order, description = "Cancelled"),
              (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Not possible in the order's state (shipped for a customer, delivered, cancelled), or the cancellation window has passed")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<Order>, Error> {
    let not_found = || Error::NotFound(format!("No order {id}."));
    let order_id = order_id(&id)?;
    let mut tx = state.db.begin().await?;
    // The saga before the order, as the saga's consumers lock them.
    let (mut saga, mut order) = store::lock_saga_and_order(&mut tx, SagaKey::Order(order_id))
        .await?
        .ok_or_else(not_found)?;
    let owner = claims.sub.parse::<Uuid>().ok() == Some(order.customer_id);
    let requester = if claims.has_role("admin") {
        Requester::Admin
    } else if owner {
        let window =
            chrono::Duration::from_std(state.cancel_window).unwrap_or(chrono::Duration::MAX);
        let within_window = order
            .created_at
            .checked_add_signed(window)
            .is_none_or(|closes| chrono::Utc::now() < closes);
        Requester::Owner { within_window }
    } else {
        return Err(not_found());
    };
    let decision = cancel_requested(order.status, requester).map_err(|refused| match refused {
        CancelRefused::Illegal(illegal) => Error::Illegal(illegal),
        CancelRefused::WindowPassed => Error::Conflict(format!(
            "The order can no longer be cancelled: the {} minutes to cancel it after placing it have passed.",
            state.cancel_window.as_secs() / 60
        )),
    })?;
    let shipped = order.status == crate::domain::status::Status::Shipped;
    saga::cancel_on_request(&mut tx, &mut saga, &mut order, &decision, state.timeouts).await?;
    if shipped {
        crate::aftersale::cancelled_after_shipping(&mut tx, &mut order, state.timeouts).await?;
    }
    let view = store::get(&mut tx, order_id).await?.ok_or_else(not_found)?;
    tx.commit().await?;
    tracing::info!(%order_id, ?requester, "order cancelled on request");
    Ok(Json(view))
}

/// The order, locked, for an admin's fulfilment step.
async fn locked_for_admin(
    conn: &mut sqlx::PgConnection,
    claims: &Claims,
    id: &str,
) -> Result<OrderRow, Error> {
    require_admin(claims)?;
    let order_id = order_id(id)?;
    store::lock(conn, order_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No order {id}.")))
}

/// Hands a `confirmed` order to a carrier (admins only): it becomes `shipped` and
/// `order.shipped` is published with the carrier and tracking number.
#[utoipa::path(post, path = "/v1/orders/{id}/ship", tag = "orders", request_body = ShipRequest,
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order, description = "Shipped"),
              (status = 401, body = Problem), (status = 403, body = Problem, description = "Not an admin"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "The order is not confirmed"),
              (status = 422, body = Problem, description = "Invalid fields (empty, too long, control characters), each named")),
    security(("bearer" = [])))]
pub async fn ship(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
    Json(request): Json<ShipRequest>,
) -> Result<Json<Order>, Error> {
    require_admin(&claims)?;
    let request = request.validate().map_err(Error::Invalid)?;
    let mut tx = state.db.begin().await?;
    let mut order = locked_for_admin(&mut tx, &claims, &id).await?;
    let entry = OrderEvent::Shipped {
        carrier: request.carrier.clone(),
        tracking_number: request.tracking_number.clone(),
    };
    store::append(&mut tx, &mut order, &entry).await?;
    crate::aftersale::capture_on_ship(&mut tx, &order, state.timeouts).await?;
    let shipped = tienda_events::order::OrderShipped {
        order_id: order.id,
        customer_id: Some(order.customer_id),
        email: order.email.clone(),
        carrier: request.carrier,
        tracking_number: request.tracking_number,
    };
    outbox::enqueue(&mut tx, saga::about(shipped, order.id, None)).await?;
    let view = store::get(&mut tx, order.id)
        .await?
        .expect("locked in this transaction");
    tx.commit().await?;
    Ok(Json(view))
}

/// Records that a `shipped` order reached the customer (admins only): it becomes `delivered`
/// and `order.delivered` is published.
#[utoipa::path(post, path = "/v1/orders/{id}/deliver", tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses((status = 200, body = Order, description = "Delivered"),
              (status = 401, body = Problem), (status = 403, body = Problem, description = "Not an admin"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "The order is not shipped")),
    security(("bearer" = [])))]
pub async fn deliver(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(id): Path<String>,
) -> Result<Json<Order>, Error> {
    let mut tx = state.db.begin().await?;
    let mut order = locked_for_admin(&mut tx, &claims, &id).await?;
    store::append(&mut tx, &mut order, &OrderEvent::Delivered).await?;
    let delivered = tienda_events::order::OrderDelivered {
        order_id: order.id,
        customer_id: Some(order.customer_id),
        email: order.email.clone(),
        delivered_at: order.updated_at,
    };
    outbox::enqueue(&mut tx, saga::about(delivered, order.id, None)).await?;
    let view = store::get(&mut tx, order.id)
        .await?
        .expect("locked in this transaction");
    tx.commit().await?;
    Ok(Json(view))
}
