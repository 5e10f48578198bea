//! Prices and availability from products, over HTTP through the kit's outbound client (so the
//! CircuitPolicy for `{kind: Service, name: products}` applies).
//!
//! Products has no lookup by SKU yet, so each checkout line names its product and this reads
//! `GET /v1/products/{id}` once per distinct product, then finds the line's variant in it.

use std::collections::HashMap;

use serde::Deserialize;
use tienda_events::Money;
use tienda_kit::outbound::{Outbound, Target};
use uuid::Uuid;

use crate::{
    domain::checkout::{FieldErrors, ItemRequest, PricedLine},
    error::Error,
};

/// Products' view of a product: only what pricing needs (other fields are ignored).
#[derive(Debug, Deserialize)]
struct Product {
    name: String,
    status: String,
    variants: Vec<Variant>,
}

#[derive(Debug, Deserialize)]
struct Variant {
    sku: String,
    price: Money,
}

/// The products service as orders calls it.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The client applying CircuitPolicies.
    pub outbound: Outbound,
    /// Products' base URL, e.g. `http://127.0.0.1:3002`.
    pub base_url: String,
}

impl Catalog {
    async fn product(&self, id: Uuid) -> Result<Option<Product>, Error> {
        let url = format!("{}/v1/products/{id}", self.base_url.trim_end_matches('/'));
        let request = self
            .outbound
            .client()
            .get(url)
            .build()
            .map_err(|e| Error::Unavailable(format!("building a request to products: {e}")))?;
        let unavailable = |what: String| {
            Error::Unavailable(format!(
                "Prices could not be read from the catalog ({what}); retry shortly."
            ))
        };
        let response = self
            .outbound
            .call(Target::Service("products"), request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => response
                .json::<Product>()
                .await
                .map(Some)
                .map_err(|e| unavailable(format!("unreadable product: {e}"))),
            status => Err(unavailable(format!("products answered {status}"))),
        }
    }

    /// Prices `items` at today's prices. Lines whose product is unknown or not for sale, or
    /// whose SKU is not one of its variants, are refused together, each named.
    pub async fn price(&self, items: &[ItemRequest]) -> Result<Vec<PricedLine>, Error> {
        let mut ids: Vec<Uuid> = items.iter().map(|i| i.product_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = futures::future::try_join_all(ids.iter().map(|id| self.product(*id))).await?;
        let products: HashMap<Uuid, Option<Product>> = ids.into_iter().zip(found).collect();
        let mut fields = FieldErrors::new();
        let mut lines = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(product) = products.get(&item.product_id).and_then(Option::as_ref) else {
                fields.push((
                    format!("items[{i}].product_id"),
                    format!("no product {} is for sale", item.product_id),
                ));
                continue;
            };
            if product.status != "active" {
                fields.push((
                    format!("items[{i}].sku"),
                    format!("{} ({}) is not for sale", item.sku, product.name),
                ));
                continue;
            }
            let Some(variant) = product.variants.iter().find(|v| v.sku == item.sku) else {
                fields.push((
                    format!("items[{i}].sku"),
                    format!("{} is not a variant of {}", item.sku, product.name),
                ));
                continue;
            };
            lines.push(PricedLine {
                product_id: item.product_id,
                sku: item.sku.clone(),
                name: product.name.clone(),
                quantity: item.quantity,
                unit_price: variant.price,
            });
        }
        if fields.is_empty() {
            Ok(lines)
        } else {
            Err(Error::Invalid(fields))
        }
    }
}
