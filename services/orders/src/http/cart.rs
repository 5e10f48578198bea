//! `/v1/cart`: a guest's cart (found by the `Cart-Token` it was created with) or a signed-in
//! customer's. Lines are priced from products at every read, next to the price the customer
//! last saw; a change is reported and must be accepted before checkout. A signed-in request
//! that still carries a guest's `Cart-Token` merges that cart into the customer's.

use std::collections::HashMap;

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tienda_events::Money;
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, customer_id};
use crate::{
    cart::{self, CartRef, GUEST_IDLE_DAYS, Line, TOKEN_HEADER},
    catalog::SaleVariant,
    domain::checkout::{
        FieldErrors, MAX_LINES, MAX_QUANTITY, PricedLine, Totals, totals, valid_sku,
    },
    error::Error,
};

/// A cart as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    /// The cart.
    pub id: Uuid,
    /// Only in the answer that created a guest cart: send it back as `Cart-Token` (it is not
    /// stored and cannot be shown again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The lines, oldest first.
    pub items: Vec<CartLine>,
    /// What the lines for sale cost at today's prices; absent while none is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
    /// Lines whose price changed since the customer last saw it: checkout refuses until they
    /// are accepted (`PATCH /v1/cart {"accept_prices": true}`).
    pub price_changes: Vec<PriceChange>,
}

/// A line of a cart.
#[derive(Debug, Serialize, ToSchema)]
pub struct CartLine {
    /// The variant.
    pub sku: String,
    /// Its product.
    pub product_id: Uuid,
    /// The product's name.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// Today's price of one unit; absent when the SKU is no longer for sale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Money>,
    /// The price of one unit the customer last saw (when adding it, or when accepting a
    /// change).
    pub seen_unit_price: Money,
    /// Whether `unit_price` differs from `seen_unit_price`.
    pub price_changed: bool,
    /// Whether the SKU can be bought (checkout refuses a cart with lines that cannot).
    pub for_sale: bool,
    /// Units that can be reserved now (a hint: stock is only held at checkout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

/// A price that changed since the customer saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceChange {
    /// The variant.
    pub sku: String,
    /// The product's name.
    pub name: String,
    /// The unit price the customer saw.
    pub seen: Money,
    /// The unit price now.
    pub current: Money,
}

/// `PATCH /v1/cart`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartPatch {
    /// `true`: the customer has seen today's prices and accepts them for every line.
    pub accept_prices: bool,
}

/// `POST /v1/cart/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// The variant.
    pub sku: String,
    /// Units to add, 1-100 (added to the line's units when the SKU is in the cart).
    pub quantity: u32,
}

/// `PATCH /v1/cart/items/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    /// The line's units, 1-100 (`DELETE` removes a line).
    pub quantity: u32,
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The cart a request speaks for, and the token when this request created it: the
/// customer's (after merging a guest cart named by `Cart-Token`), or the guest's. With
/// `create`, a guest without a token gets a new cart.
pub async fn resolve(
    state: &AppState,
    claims: Option<&Claims>,
    headers: &HeaderMap,
    create: bool,
) -> Result<(CartRef, Option<String>), Error> {
    let token = presented_token(headers);
    if let Some(claims) = claims {
        let customer = customer_id(claims)?;
        let mine = cart::of_customer(&mut *state.db.acquire().await?, customer).await?;
        if let Some(token) = token {
            merge(state, mine.id, token).await?;
        }
        return Ok((mine, None));
    }
    let mut conn = state.db.acquire().await?;
    if let Some(token) = token {
        let found = cart::guest(&mut conn, token).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "No cart for this Cart-Token: guest carts are kept {GUEST_IDLE_DAYS} days after \
                 their last change. Create one with POST /v1/cart."
            ))
        })?;
        return Ok((found, None));
    }
    if !create {
        return Err(Error::Unauthorized(
            "Send the guest cart's token in the Cart-Token header (POST /v1/cart creates a \
             cart and answers its token), or sign in."
                .into(),
        ));
    }
    let (created, token) = cart::create_guest(&mut conn).await?;
    Ok((created, Some(token)))
}

/// Moves the guest cart of `token` into the customer's cart `into`, line by line: units of a
/// SKU in both are added, capped by the stock that can be reserved (never below what the
/// customer's cart held); lines in another currency, or beyond the line limit, stay behind
/// with the guest cart, which is then deleted. Merging twice does nothing the second time.
async fn merge(state: &AppState, into: Uuid, token: &str) -> Result<(), Error> {
    let mut conn = state.db.acquire().await?;
    // An unknown token here is a cart merged before (or expired): nothing to do.
    let Some(guest) = cart::guest(&mut conn, token).await? else {
        return Ok(());
    };
    let skus: Vec<String> = cart::lines(&mut conn, guest.id)
        .await?
        .into_iter()
        .map(|l| l.sku)
        .collect();
    drop(conn);
    let variants = variants(state, skus.iter().map(String::as_str)).await?;
    let mut tx = state.db.begin().await?;
    if cart::lock(&mut tx, guest.id).await?.is_none() {
        return Ok(()); // merged meanwhile by a parallel request
    }
    cart::lock(&mut tx, into).await?;
    let theirs = cart::lines(&mut tx, guest.id).await?;
    let mut mine = cart::lines(&mut tx, into).await?;
    for line in theirs {
        let currency = mine.first().map(|l| l.seen_currency.clone());
        let existing = mine.iter().position(|m| m.sku == line.sku);
        let have = existing.map_or(0, |i| units(mine[i].quantity));
        let available = variants.get(&line.sku).map(|v| v.available);
        let quantity = cart::merged_quantity(have, units(line.quantity), available, MAX_QUANTITY);
        if quantity == have
            || (existing.is_none() && mine.len() >= MAX_LINES)
            || currency.is_some_and(|c| c != line.seen_currency)
        {
            continue;
        }
        let merged = match existing {
            Some(i) => &mut mine[i],
            None => {
                mine.push(line);
                mine.last_mut().expect("just pushed")
            }
        };
        merged.quantity = i32::try_from(quantity).expect("at most MAX_QUANTITY");
        cart::put_line(&mut tx, into, merged).await?;
    }
    cart::delete(&mut tx, guest.id).await?;
    cart::touch(&mut tx, into).await?;
    tx.commit().await?;
    Ok(())
}

/// Locks the cart for a change; gone meanwhile (deleted, or merged into a customer's) is 404.
async fn lock(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<i64, Error> {
    cart::lock(conn, id).await?.ok_or_else(|| {
        Error::NotFound("The cart is gone (deleted, or merged into your account's cart).".into())
    })
}

fn units(quantity: i32) -> u32 {
    u32::try_from(quantity).unwrap_or(0)
}

/// The SKUs among `skus` for sale; no call for none.
async fn variants<'a>(
    state: &AppState,
    skus: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, SaleVariant>, Error> {
    let skus: Vec<&str> = skus.collect();
    if skus.is_empty() {
        return Ok(HashMap::new());
    }
    state.catalog.variants(&skus).await
}

/// Prices stored lines: the view, and the lines priced at today's prices.
pub fn price_lines(
    id: Uuid,
    lines: Vec<Line>,
    variants: &HashMap<String, SaleVariant>,
) -> Result<(CartView, Vec<PricedLine>), Error> {
    let mut items = Vec::with_capacity(lines.len());
    let mut priced = Vec::with_capacity(lines.len());
    let mut price_changes = Vec::new();
    for line in lines {
        let seen = line.seen()?;
        // Repriced into another currency than the customer saw: not for sale in this cart.
        let variant = variants
            .get(&line.sku)
            .filter(|v| v.price.currency == seen.currency);
        let current = variant.map(|v| v.price);
        let changed = current.is_some_and(|c| c != seen);
        if let (true, Some(current)) = (changed, current) {
            price_changes.push(PriceChange {
                sku: line.sku.clone(),
                name: line.name.clone(),
                seen,
                current,
            });
        }
        if let Some(v) = variant {
            priced.push(PricedLine {
                product_id: v.product_id,
                sku: line.sku.clone(),
                name: v.name.clone(),
                quantity: units(line.quantity),
                unit_price: v.price,
            });
        }
        items.push(CartLine {
            name: variant.map_or(line.name, |v| v.name.clone()),
            sku: line.sku,
            product_id: line.product_id,
            quantity: units(line.quantity),
            unit_price: current,
            seen_unit_price: seen,
            price_changed: changed,
            for_sale: variant.is_some(),
            available: variant.map(|v| v.available),
        });
    }
    let view = CartView {
        id,
        token: None,
        totals: totals(&priced).ok(),
        items,
        price_changes,
    };
    Ok((view, priced))
}

/// The cart priced now.
async fn view(state: &AppState, id: Uuid, token: Option<String>) -> Result<CartView, Error> {
    let lines = cart::lines(&mut *state.db.acquire().await?, id).await?;
    let variants = variants(state, lines.iter().map(|l| l.sku.as_str())).await?;
    let (mut view, _) = price_lines(id, lines, &variants)?;
    view.token = token;
    Ok(view)
}

fn claims(extension: &Option<Extension<Claims>>) -> Option<&Claims> {
    extension.as_ref().map(|Extension(c)| c)
}

/// The cart: a signed-in customer's (created empty when they have none; a guest cart named
/// by `Cart-Token` is merged into it), or the guest cart of `Cart-Token`.
#[utoipa::path(get, path = "/v1/cart", tag = "cart",
    params(("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 200, body = CartView),
              (status = 401, body = Problem, description = "Neither a token nor a Cart-Token"),
              (status = 404, body = Problem, description = "No cart for this Cart-Token"),
              (status = 503, body = Problem, description = "Prices could not be read")),
    security((), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
) -> Result<Json<CartView>, Error> {
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    Ok(Json(view(&state, cart.id, None).await?))
}

/// Creates a guest cart (`201`, with its `token`: send it as `Cart-Token`), or answers the
/// cart the request already has (`200`).
#[utoipa::path(post, path = "/v1/cart", tag = "cart",
    params(("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 201, body = CartView, description = "A guest cart, with its token"),
              (status = 200, body = CartView), (status = 404, body = Problem),
              (status = 503, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (cart, token) = resolve(&state, claims(&auth), &headers, true).await?;
    let status = if token.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, cart.id, token).await?)).into_response())
}

/// Accepts today's prices for every line (after showing them to the customer).
#[utoipa::path(patch, path = "/v1/cart", tag = "cart", request_body = CartPatch,
    params(("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 200, body = CartView), (status = 401, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem),
              (status = 503, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn patch(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
    Json(patch): Json<CartPatch>,
) -> Result<Json<CartView>, Error> {
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    if patch.accept_prices {
        let lines = cart::lines(&mut *state.db.acquire().await?, cart.id).await?;
        let variants = variants(&state, lines.iter().map(|l| l.sku.as_str())).await?;
        let mut tx = state.db.begin().await?;
        lock(&mut tx, cart.id).await?;
        for mut line in cart::lines(&mut tx, cart.id).await? {
            let Some(variant) = variants.get(&line.sku) else {
                continue;
            };
            let seen = line.seen()?;
            if variant.price.currency != seen.currency {
                continue; // shown as not for sale; the customer removes it
            }
            if seen != variant.price {
                line.seen_amount = variant.price.amount;
                line.seen_currency = variant.price.currency.to_string();
                cart::put_line(&mut tx, cart.id, &line).await?;
            }
        }
        cart::touch(&mut tx, cart.id).await?;
        tx.commit().await?;
    }
    Ok(Json(view(&state, cart.id, None).await?))
}

/// Empties the cart (a guest's is deleted: its token stops working).
#[utoipa::path(delete, path = "/v1/cart", tag = "cart",
    params(("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn clear(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    let mut tx = state.db.begin().await?;
    if auth.is_some() {
        cart::clear(&mut tx, cart.id).await?;
        cart::touch(&mut tx, cart.id).await?;
    } else {
        cart::delete(&mut tx, cart.id).await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

fn check_quantity(fields: &mut FieldErrors, quantity: u32) {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        fields.push(("quantity".into(), format!("must be 1 to {MAX_QUANTITY}")));
    }
}

fn check_sku(sku: &str) -> Result<(), Error> {
    if valid_sku(sku) {
        Ok(())
    } else {
        Err(Error::Invalid(vec![(
            "sku".into(),
            "must be a SKU (1-64 letters, digits, '.', '_', '-')".into(),
        )]))
    }
}

/// Adds units of a SKU at today's price (which becomes the price the customer saw for the
/// line). Refused when the SKU is not for sale, when fewer units can be reserved than the
/// line would hold, or when it is priced in another currency than the cart.
#[utoipa::path(post, path = "/v1/cart/items", tag = "cart", request_body = NewItem,
    params(("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 200, body = CartView), (status = 401, body = Problem),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "Not enough stock"),
              (status = 422, body = Problem, description = "Invalid fields, or not for sale"),
              (status = 503, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn add_item(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
    Json(item): Json<NewItem>,
) -> Result<Json<CartView>, Error> {
    let mut fields = FieldErrors::new();
    if !valid_sku(&item.sku) {
        fields.push((
            "sku".into(),
            "must be a SKU (1-64 letters, digits, '.', '_', '-')".into(),
        ));
    }
    check_quantity(&mut fields, item.quantity);
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    let variant = state
        .catalog
        .variants(&[item.sku.as_str()])
        .await?
        .remove(&item.sku)
        .ok_or_else(|| {
            Error::Invalid(vec![(
                "sku".into(),
                format!("{} is not for sale", item.sku),
            )])
        })?;
    let mut tx = state.db.begin().await?;
    lock(&mut tx, cart.id).await?;
    let lines = cart::lines(&mut tx, cart.id).await?;
    let existing = lines.iter().find(|l| l.sku == item.sku);
    let have = existing.map_or(0, |l| units(l.quantity));
    if have + item.quantity > MAX_QUANTITY {
        return Err(Error::Invalid(vec![(
            "quantity".into(),
            format!("at most {MAX_QUANTITY} units of one SKU (the cart holds {have})"),
        )]));
    }
    if existing.is_none() && lines.len() >= MAX_LINES {
        return Err(Error::Invalid(vec![(
            "sku".into(),
            format!("a cart holds at most {MAX_LINES} lines"),
        )]));
    }
    if let Some(other) = lines
        .iter()
        .find(|l| l.seen_currency != variant.price.currency.as_str())
    {
        return Err(Error::Invalid(vec![(
            "sku".into(),
            format!(
                "is priced in {}, the cart in {}; order it separately",
                variant.price.currency, other.seen_currency
            ),
        )]));
    }
    if variant.available < i64::from(have + item.quantity) {
        return Err(Error::InsufficientStock {
            sku: item.sku,
            available: variant.available,
        });
    }
    let line = Line {
        sku: item.sku,
        product_id: variant.product_id,
        name: variant.name,
        quantity: i32::try_from(have + item.quantity).expect("at most MAX_QUANTITY"),
        seen_amount: variant.price.amount,
        seen_currency: variant.price.currency.to_string(),
        added_at: existing.map_or_else(chrono::Utc::now, |l| l.added_at),
    };
    cart::put_line(&mut tx, cart.id, &line).await?;
    cart::touch(&mut tx, cart.id).await?;
    tx.commit().await?;
    Ok(Json(view(&state, cart.id, None).await?))
}

/// Sets a line's units (keeping the price the customer saw). More units than can be
/// reserved is refused.
#[utoipa::path(patch, path = "/v1/cart/items/{sku}", tag = "cart", request_body = ItemPatch,
    params(("sku" = String, Path, description = "The line's SKU"),
           ("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 200, body = CartView), (status = 401, body = Problem),
              (status = 404, body = Problem, description = "No such cart or line"),
              (status = 409, body = Problem, description = "Not enough stock"),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn set_item(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
    Path(sku): Path<String>,
    Json(patch): Json<ItemPatch>,
) -> Result<Json<CartView>, Error> {
    check_sku(&sku)?;
    let mut fields = FieldErrors::new();
    check_quantity(&mut fields, patch.quantity);
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    let available = state
        .catalog
        .variants(&[sku.as_str()])
        .await?
        .remove(&sku)
        .map(|v| v.available);
    let mut tx = state.db.begin().await?;
    lock(&mut tx, cart.id).await?;
    let mut line = cart::lines(&mut tx, cart.id)
        .await?
        .into_iter()
        .find(|l| l.sku == sku)
        .ok_or_else(|| no_line(&sku))?;
    let more = i64::from(patch.quantity) > i64::from(line.quantity);
    match available {
        Some(units) if more && units < i64::from(patch.quantity) => {
            return Err(Error::InsufficientStock {
                sku,
                available: units,
            });
        }
        None if more => {
            return Err(Error::Invalid(vec![(
                "sku".into(),
                format!("{sku} is no longer for sale; remove the line"),
            )]));
        }
        _ => {}
    }
    line.quantity = i32::try_from(patch.quantity).expect("at most MAX_QUANTITY");
    cart::put_line(&mut tx, cart.id, &line).await?;
    cart::touch(&mut tx, cart.id).await?;
    tx.commit().await?;
    Ok(Json(view(&state, cart.id, None).await?))
}

fn no_line(sku: &str) -> Error {
    Error::NotFound(format!("The cart has no line for {sku}."))
}

/// Removes a line.
#[utoipa::path(delete, path = "/v1/cart/items/{sku}", tag = "cart",
    params(("sku" = String, Path, description = "The line's SKU"),
           ("Cart-Token" = Option<String>, Header, description = "A guest cart's token")),
    responses((status = 200, body = CartView), (status = 401, body = Problem),
              (status = 404, body = Problem, description = "No such cart or line"),
              (status = 422, body = Problem), (status = 503, body = Problem)),
    security((), ("bearer" = [])))]
pub async fn remove_item(
    State(state): State<AppState>,
    auth: Option<Extension<Claims>>,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> Result<Json<CartView>, Error> {
    check_sku(&sku)?;
    let (cart, _) = resolve(&state, claims(&auth), &headers, false).await?;
    let mut tx = state.db.begin().await?;
    lock(&mut tx, cart.id).await?;
    if !cart::remove_line(&mut tx, cart.id, &sku).await? {
        return Err(no_line(&sku));
    }
    cart::touch(&mut tx, cart.id).await?;
    tx.commit().await?;
    Ok(Json(view(&state, cart.id, None).await?))
}
