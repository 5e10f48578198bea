//! `/v1/orders`: a customer's orders.

use axum::{
    Extension,
    extract::{Path, Query, State},
};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::IntoParams;
use uuid::Uuid;

use super::{AppState, customer_id};
use crate::{
    error::Error,
    store::{self, Order, OrderPage},
};

/// `GET /v1/orders` parameters.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    /// Reads the query string; unknown parameters and bad values are field errors.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Error> {
        let mut params = Self::default();
        let mut fields = Vec::new();
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => match value.parse::<i64>() {
                    Ok(v) if (1..=100).contains(&v) => params.limit = Some(v),
                    _ => fields.push((key.clone(), "must be 1 to 100".to_owned())),
                },
                "cursor" if Uuid::try_parse(value).is_ok() => {
                    params.cursor = Some(value.clone());
                }
                "cursor" => fields.push((
                    key.clone(),
                    "must be the next_cursor of a previous page".to_owned(),
                )),
                _ => fields.push((
                    key.clone(),
                    "is not a parameter of this endpoint".to_owned(),
                )),
            }
        }
        if fields.is_empty() {
            Ok(params)
        } else {
            Err(Error::Invalid(fields))
        }
    }
}

/// The caller's orders, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListParams),
    responses((status = 200, body = OrderPage), (status = 401, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<OrderPage>, Error> {
    let customer = customer_id(&claims)?;
    let params = ListParams::parse(&pairs)?;
    let limit = params.limit.unwrap_or(20);
    let before = params
        .cursor
        .as_deref()
        .map(|c| Uuid::try_parse(c).expect("checked by parse"));
    let mut conn = state.db.acquire().await?;
    let mut items = store::list_for_customer(&mut conn, customer, before, limit + 1).await?;
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
