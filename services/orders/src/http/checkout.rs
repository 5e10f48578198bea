//! `POST /v1/checkout`: places an order (`pending`) and starts its saga.

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tienda_events::order::OrderPlaced;
use tienda_kit::{Problem, idempotency, json::Json, jwt::Claims, outbox};
use uuid::Uuid;

use super::{AppState, customer_id};
use crate::{
    domain::{
        checkout::{CheckoutRequest, totals},
        log::{OrderEvent, PlacedLine},
    },
    error::Error,
    saga,
    store::{self, Order},
};

/// Places an order from the items, shipping address, email and payment method, and answers
/// at once: stock and payment are settled by the saga (follow `tracking_url`). Requires an
/// `Idempotency-Key`: retries with the same key get the same order.
#[utoipa::path(post, path = "/v1/checkout", tag = "checkout", request_body = CheckoutRequest,
    params(("Idempotency-Key" = String, Header, description = "Required; one per checkout")),
    responses((status = 202, body = Order, headers(("Location" = String))),
              (status = 400, body = Problem, description = "No or a malformed Idempotency-Key"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, body = Problem, description = "The same key is in use"),
              (status = 422, body = Problem, description = "Invalid fields (control characters, a card number as payment_method), unknown SKUs or products not for sale, each named; or the key reused with another request"),
              (status = 503, body = Problem, description = "Prices could not be read")),
    security(("bearer" = [])))]
pub async fn checkout(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, Error> {
    let customer = customer_id(&claims)?;
    let request = request.validate().map_err(Error::Invalid)?;
    // The idempotency layer has checked the key is there and well formed.
    let key = headers
        .get(idempotency::KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let lines = state.catalog.price(&request.items).await?;
    let totals = totals(&lines).map_err(Error::Invalid)?;
    let id = Uuid::now_v7();
    let placed = OrderEvent::Placed {
        customer_id: Some(customer),
        email: request.email.clone(),
        shipping_address: request.shipping_address.clone(),
        total: totals.total,
        lines: lines.iter().map(PlacedLine::from).collect(),
        subtotal: Some(totals.subtotal),
        currency: Some(totals.total.currency.as_str().to_owned()),
        payment_method: Some(request.payment_method.clone()),
        checkout_key: Some(key.clone()),
    };
    let mut tx = state.db.begin().await?;
    let id = match store::place(&mut tx, id, &placed).await? {
        Ok(order) => {
            let mut event = tienda_events::Envelope::new(
                crate::SOURCE,
                OrderPlaced {
                    order_id: id,
                    customer_id: Some(customer),
                    email: request.email.clone(),
                    items: lines
                        .iter()
                        .map(|l| tienda_events::order::OrderLine {
                            sku: l.sku.clone(),
                            name: l.name.clone(),
                            quantity: l.quantity,
                            unit_price: l.unit_price,
                        })
                        .collect(),
                    total: totals.total,
                },
            );
            event.correlation_id = id;
            outbox::enqueue(&mut tx, event).await?;
            saga::begin(&mut tx, &order, &lines, state.timeouts).await?;
            id
        }
        // Placed before with this key (its stored answer was lost): answer with that order.
        Err(existing) => existing,
    };
    let order = store::get(&mut tx, id)
        .await?
        .expect("exists in this transaction");
    tx.commit().await?;
    let location = header::HeaderValue::from_str(&order.tracking_url).expect("ascii");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}
