//! Prices and availability from products, over HTTP through the kit's outbound client (so the
//! CircuitPolicy for `{kind: Service, name: products}` applies).
//!
//! One call, `GET /v1/products/variants?skus=…`, answers the SKUs that are for sale with their
//! product, name, price and available units; a SKU missing from the answer cannot be bought.

use std::collections::HashMap;

use serde::Deserialize;
use tienda_events::Money;
use tienda_kit::outbound::{Outbound, Target};
use uuid::Uuid;

use crate::{
    domain::checkout::{FieldErrors, ItemRequest, PricedLine},
    error::Error,
};

/// Most SKUs products answers in one lookup.
const LOOKUP_MAX: usize = 100;

/// A variant for sale, as products answers it (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct SaleVariant {
    /// The SKU.
    pub sku: String,
    /// Its product.
    pub product_id: Uuid,
    /// The product's name.
    pub name: String,
    /// Today's price of one unit.
    pub price: Money,
    /// Units that can be reserved now.
    pub available: i64,
}

#[derive(Debug, Deserialize)]
struct VariantList {
    items: Vec<SaleVariant>,
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
    /// The SKUs among `skus` that are for sale, by SKU.
    pub async fn variants(&self, skus: &[&str]) -> Result<HashMap<String, SaleVariant>, Error> {
        let mut found = HashMap::with_capacity(skus.len());
        for chunk in skus.chunks(LOOKUP_MAX) {
            for variant in self.lookup(chunk).await? {
                found.insert(variant.sku.clone(), variant);
            }
        }
        Ok(found)
    }

    async fn lookup(&self, skus: &[&str]) -> Result<Vec<SaleVariant>, Error> {
        let url = format!(
            "{}/v1/products/variants?skus={}",
            self.base_url.trim_end_matches('/'),
            // SKUs are letters, digits, '.', '_' and '-': nothing to escape.
            skus.join(",")
        );
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
            status if status.is_success() => response
                .json::<VariantList>()
                .await
                .map(|list| list.items)
                .map_err(|e| unavailable(format!("unreadable variants: {e}"))),
            status => Err(unavailable(format!("products answered {status}"))),
        }
    }

    /// Prices `items` at today's prices. Lines whose SKU is not for sale, or that name a
    /// product the SKU is not a variant of, are refused together, each named.
    pub async fn price(&self, items: &[ItemRequest]) -> Result<Vec<PricedLine>, Error> {
        let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
        let variants = self.variants(&skus).await?;
        let mut fields = FieldErrors::new();
        let mut lines = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(variant) = variants.get(&item.sku) else {
                fields.push((
                    format!("items[{i}].sku"),
                    format!("{} is not for sale", item.sku),
                ));
                continue;
            };
            if item.product_id.is_some_and(|id| id != variant.product_id) {
                fields.push((
                    format!("items[{i}].product_id"),
                    format!("is not the product of {}", item.sku),
                ));
                continue;
            }
            lines.push(PricedLine {
                product_id: variant.product_id,
                sku: item.sku.clone(),
                name: variant.name.clone(),
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
