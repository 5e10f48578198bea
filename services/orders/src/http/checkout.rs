//! `POST /v1/checkout`: places an order (`pending`) and starts its saga.

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tienda_events::order::OrderPlaced;
use tienda_kit::{
    Problem, idempotency,
    json::Json,
    jwt::Claims,
    net::ClientIp,
    outbox,
    trace_context::{Kind, Span},
};
use uuid::Uuid;

use super::{AppState, cart::price_lines, customer_id};
use crate::{
    cart::{self, CartRef},
    domain::{
        checkout::{CheckoutRequest, PricedLine, totals},
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
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Json(request): Json<CheckoutRequest>,
) -> Result<Response, Error> {
    let customer = customer_id(&claims)?;
    let request = request.validate().map_err(Error::Invalid)?;
    // The idempotency layer has checked the key is there and well formed; decoded the way it
    // decodes it, so `"abc"` and `abc` are one key to both.
    let key = idempotency::key_of(&headers)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Invalid(vec![("Idempotency-Key".into(), "is required".into())]))?;
    // Placed before with this key (its stored answer was lost): answer with that order,
    // before the cart it emptied is looked at.
    if let Some(id) =
        store::by_checkout_key(&mut *state.db.acquire().await?, customer, &key).await?
    {
        return answer(&state, id).await;
    }
    let (lines, from_cart) = match &request.items {
        Some(items) => (state.catalog.price(items).await?, None),
        None => {
            let (lines, cart) = from_cart(&state, &claims, &headers).await?;
            (lines, Some(cart))
        }
    };
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
        from_cart: from_cart.is_some(),
        client_ip: Some(client.to_string()),
    };
    // The transaction that places the order and starts its saga, as a span of its own.
    let place = Span::child("place order", Kind::Internal);
    let outcome = place
        .run_fallible(async {
            let mut tx = state.db.begin().await?;
            if let Some(cart) = from_cart {
                // The lines priced are the cart's only if it has not changed since they
                // were read; placing the order empties it, so a second checkout of the same
                // cart finds it empty.
                if cart::lock(&mut tx, cart.id).await? != Some(cart.version) {
                    return Err(Error::Conflict(
                        "The cart changed during checkout; read it and check out again.".into(),
                    ));
                }
                cart::clear(&mut tx, cart.id).await?;
                cart::touch(&mut tx, cart.id).await?;
            }
            let outcome = match store::place(&mut tx, id, &placed).await? {
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
                    // What was written is the answer: no need to read it back.
                    Ok(store::placed_view(&order, &lines))
                }
                // Placed before with this key (its stored answer was lost): answer with
                // that order.
                Err(existing) => Err(existing),
            };
            tx.commit().await?;
            Ok::<_, Error>(outcome)
        })
        .await?;
    match outcome {
        Ok(order) => Ok(accepted(order)),
        Err(existing) => answer(&state, existing).await,
    }
}

/// `202` with order `id`, read.
async fn answer(state: &AppState, id: Uuid) -> Result<Response, Error> {
    let order = store::get(&mut *state.db.acquire().await?, id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("No order {id}.")))?;
    Ok(accepted(order))
}

/// `202` with the order.
fn accepted(order: store::Order) -> Response {
    let location = header::HeaderValue::from_str(&order.tracking_url).expect("ascii");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response()
}

/// The customer's cart priced for checkout (a guest cart named by `Cart-Token` merged into
/// it first), and the version it was read at. An empty cart, lines no longer for sale, and
/// prices changed since the customer saw them are refused, naming the lines.
async fn from_cart(
    state: &AppState,
    claims: &Claims,
    headers: &HeaderMap,
) -> Result<(Vec<PricedLine>, CartRef), Error> {
    let (cart, _) = super::cart::resolve(state, Some(claims), headers, false).await?;
    let (cart, lines) = {
        let mut conn = state.db.acquire().await?;
        // Read before the lines: a change in between makes the check at placing refuse.
        let version = cart::version(&mut conn, cart.id)
            .await?
            .unwrap_or(cart.version);
        let lines = cart::lines(&mut conn, cart.id).await?;
        (
            CartRef {
                id: cart.id,
                version,
            },
            lines,
        )
    };
    if lines.is_empty() {
        return Err(Error::Invalid(vec![(
            "items".into(),
            "the cart is empty: add lines with POST /v1/cart/items, or send items".into(),
        )]));
    }
    let skus: Vec<&str> = lines.iter().map(|l| l.sku.as_str()).collect();
    let variants = state.catalog.variants(&skus).await?;
    let (view, priced) = price_lines(cart.id, lines, &variants)?;
    let gone: Vec<(String, String)> = view
        .items
        .iter()
        .enumerate()
        .filter(|(_, line)| !line.for_sale)
        .map(|(i, line)| {
            (
                format!("items[{i}].sku"),
                format!(
                    "{} ({}) is no longer for sale; remove it from the cart",
                    line.sku, line.name
                ),
            )
        })
        .collect();
    if !gone.is_empty() {
        return Err(Error::Invalid(gone));
    }
    if !view.price_changes.is_empty() {
        return Err(Error::PriceChanged(view.price_changes));
    }
    Ok((priced, cart))
}
