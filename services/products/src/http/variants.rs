//! `GET /v1/products/variants?skus=…`: what a cart needs about its SKUs in one call — the
//! product, its name, today's price and the units that can be reserved.

use axum::extract::{Query, State, rejection::QueryRejection};
use serde::{Deserialize, Serialize};
use tienda_events::Money;
use tienda_kit::{Problem, json::Json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::{catalog::valid_sku, error::Error};

/// Most SKUs in one lookup (a cart holds at most 50 lines; a merge reads two carts).
pub const MAX_SKUS: usize = 100;

/// The query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VariantQuery {
    /// 1-100 SKUs, comma-separated.
    pub skus: String,
}

/// A variant for sale.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleVariant {
    /// The SKU.
    pub sku: String,
    /// Its product.
    pub product_id: Uuid,
    /// The product's name.
    pub name: String,
    /// The variant's attributes (`{"size": "M"}`).
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// The price of one unit today.
    pub price: Money,
    /// Units that can be reserved now (`on_hand - reserved`).
    pub available: i64,
}

/// The SKUs found for sale.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantList {
    /// One per SKU asked that is for sale (its product active and not deleted, the variant
    /// not removed), in the order asked. SKUs not for sale are left out.
    pub items: Vec<SaleVariant>,
}

/// Looks up variants by SKU: only those for sale are answered, so a missing SKU means it
/// cannot be bought (unknown, removed, or its product is a draft, archived or deleted).
#[utoipa::path(get, path = "/v1/products/variants", tag = "products", params(VariantQuery),
    responses((status = 200, body = VariantList), (status = 422, body = Problem)))]
pub async fn lookup(
    State(state): State<AppState>,
    query: Result<Query<VariantQuery>, QueryRejection>,
) -> Result<Json<VariantList>, Problem> {
    let Query(query) = query.map_err(|e| Problem::validation(e.body_text()))?;
    let mut skus: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sku in query.skus.split(',') {
        if !valid_sku(sku) {
            return Err(Error::Invalid(vec![(
                "skus".into(),
                "must be SKUs separated by commas (letters, digits, '.', '_', '-')".into(),
            )])
            .into());
        }
        // A set, not a scan of the list: the query string may hold thousands of SKUs.
        if seen.insert(sku) {
            skus.push(sku.to_owned());
        }
    }
    if skus.len() > MAX_SKUS {
        return Err(
            Error::Invalid(vec![("skus".into(), format!("at most {MAX_SKUS} SKUs"))]).into(),
        );
    }
    let rows: Vec<(String, Uuid, String, serde_json::Value, i64, String, i64)> = sqlx::query_as(
        "SELECT v.sku, p.id, p.name, v.attributes, v.price_amount, v.currency,
                COALESCE(i.on_hand - i.reserved, 0)
           FROM unnest($1::text[]) WITH ORDINALITY AS asked (sku, n)
           JOIN variants v ON v.sku = asked.sku AND v.removed_at IS NULL
           JOIN products p ON p.id = v.product_id AND p.status = 'active'
                           AND p.deleted_at IS NULL
           LEFT JOIN inventory i ON i.sku = v.sku
          ORDER BY asked.n",
    )
    .bind(&skus)
    .fetch_all(&state.db)
    .await
    .map_err(Error::from)?;
    let items = rows
        .into_iter()
        .map(
            |(sku, product_id, name, attributes, amount, currency, available)| {
                let currency = currency.parse().map_err(|_| {
                    sqlx::Error::Decode(format!("variant {sku} has currency {currency:?}").into())
                })?;
                Ok(SaleVariant {
                    sku,
                    product_id,
                    name,
                    attributes,
                    price: Money { amount, currency },
                    available,
                })
            },
        )
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)?;
    Ok(Json(VariantList { items }))
}
