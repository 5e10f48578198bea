//! Product events, published by products. Replicas invalidate their read caches on them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{contract, money::Money};

/// Lifecycle state of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Not visible to customers.
    Draft,
    /// For sale.
    Active,
    /// No longer sold; kept for order history.
    Archived,
}

/// A sellable variant as events describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// Stock keeping unit, unique across the catalog.
    pub sku: String,
    /// Unit price.
    pub price: Money,
}

/// A product was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCreated {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: ProductStatus,
    /// Its variants.
    pub variants: Vec<VariantSummary>,
}
contract!(Event, ProductCreated, "product", "created", 1, |m| m
    .product_id);

/// A product changed; `version` is its new ETag version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductUpdated {
    /// The product.
    pub product_id: Uuid,
    /// Its version after the change (increases by one per change).
    pub version: i64,
    /// Its status after the change.
    pub status: ProductStatus,
    /// Its variants after the change.
    pub variants: Vec<VariantSummary>,
}
contract!(Event, ProductUpdated, "product", "updated", 1, |m| m
    .product_id);

/// A product was (soft) deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductDeleted {
    /// The product.
    pub product_id: Uuid,
}
contract!(Event, ProductDeleted, "product", "deleted", 1, |m| m
    .product_id);
