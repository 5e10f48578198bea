//! Products and their variants: the shapes, the rules, and the SQL.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tienda_events::{
    catalog::{ProductStatus, VariantSummary},
    money::{Currency, Money},
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Fields};

/// A product as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description (plain text).
    pub description: String,
    /// `draft` (hidden from customers), `active`, `archived`.
    pub status: ProductStatus,
    /// The categories it is listed in.
    pub category_ids: Vec<Uuid>,
    /// Image URLs.
    pub images: Vec<String>,
    /// Sellable variants, in order.
    pub variants: Vec<Variant>,
    /// The version the `ETag` carries; one more per change.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A variant (SKU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Stock keeping unit: 1-64 of A-Z a-z 0-9 . _ -; unique across the catalog.
    pub sku: String,
    /// Attributes such as `{"color": "red", "size": "M"}`: keys 1-40 of a-z 0-9 _, values
    /// 1-100 characters, at most 20.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Unit price.
    pub price: Money,
}

/// `POST /v1/products`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// 1-200 characters.
    pub name: String,
    /// At most 10,000 characters.
    #[serde(default)]
    pub description: String,
    /// Default `draft`.
    #[serde(default = "draft")]
    pub status: ProductStatus,
    /// Existing categories.
    #[serde(default)]
    pub category_ids: Vec<Uuid>,
    /// At most 20 http(s) URLs.
    #[serde(default)]
    pub images: Vec<String>,
    /// 1-100 variants, all in one currency.
    pub variants: Vec<Variant>,
}

fn draft() -> ProductStatus {
    ProductStatus::Draft
}

/// `PATCH /v1/products/{id}`: the fields given replace the product's. `variants` replaces the
/// whole list: SKUs not in it are removed from the product (kept for order history).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// 1-200 characters.
    pub name: Option<String>,
    /// At most 10,000 characters.
    pub description: Option<String>,
    /// New status.
    pub status: Option<ProductStatus>,
    /// Existing categories.
    pub category_ids: Option<Vec<Uuid>>,
    /// At most 20 http(s) URLs.
    pub images: Option<Vec<String>>,
    /// 1-100 variants, all in one currency.
    pub variants: Option<Vec<Variant>>,
}

/// The largest price accepted, in minor units (ten billion in major units).
pub const MAX_PRICE: i64 = 1_000_000_000_000;

/// Checks a whole product; every problem names its field.
pub fn validate(product: &NewProduct) -> Result<(), Error> {
    let mut fields = Fields::default();
    check_name(&mut fields, &product.name);
    check_description(&mut fields, &product.description);
    check_images(&mut fields, &product.images);
    check_variants(&mut fields, &product.variants);
    check_category_ids(&mut fields, &product.category_ids);
    fields.into_result()
}

/// Checks the fields a patch sets.
pub fn validate_patch(patch: &ProductPatch) -> Result<(), Error> {
    let mut fields = Fields::default();
    if let Some(name) = &patch.name {
        check_name(&mut fields, name);
    }
    if let Some(description) = &patch.description {
        check_description(&mut fields, description);
    }
    if let Some(images) = &patch.images {
        check_images(&mut fields, images);
    }
    if let Some(variants) = &patch.variants {
        check_variants(&mut fields, variants);
    }
    if let Some(ids) = &patch.category_ids {
        check_category_ids(&mut fields, ids);
    }
    fields.into_result()
}

fn check_name(fields: &mut Fields, name: &str) {
    let len = name.trim().chars().count();
    if len == 0 || len > 200 {
        fields.add("name", "must be 1 to 200 characters");
    }
}

fn check_description(fields: &mut Fields, description: &str) {
    if description.chars().count() > 10_000 {
        fields.add("description", "must be at most 10000 characters");
    }
}

fn check_images(fields: &mut Fields, images: &[String]) {
    if images.len() > 20 {
        fields.add("images", "at most 20 images");
    }
    for (i, url) in images.iter().enumerate() {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2048
            && !url.chars().any(char::is_whitespace);
        if !ok {
            fields.add(format!("images[{i}]"), "must be an http(s) URL");
        }
    }
}

fn check_category_ids(fields: &mut Fields, ids: &[Uuid]) {
    if ids.len() > 20 {
        fields.add("category_ids", "at most 20 categories");
    }
}

/// Whether `sku` is a valid SKU.
pub fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `key` is a valid attribute name.
pub fn valid_attribute_key(key: &str) -> bool {
    (1..=40).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_variants(fields: &mut Fields, variants: &[Variant]) {
    if variants.is_empty() || variants.len() > 100 {
        fields.add("variants", "must hold 1 to 100 variants");
    }
    let mut skus = BTreeSet::new();
    let currencies: BTreeSet<Currency> = variants.iter().map(|v| v.price.currency).collect();
    if currencies.len() > 1 {
        fields.add("variants", "all variants must be priced in one currency");
    }
    for (i, v) in variants.iter().enumerate() {
        if !valid_sku(&v.sku) {
            fields.add(
                format!("variants[{i}].sku"),
                "must be 1 to 64 of A-Z a-z 0-9 . _ -",
            );
        } else if !skus.insert(v.sku.as_str()) {
            fields.add(format!("variants[{i}].sku"), "appears twice");
        }
        if !(0..=MAX_PRICE).contains(&v.price.amount) {
            fields.add(
                format!("variants[{i}].price.amount"),
                format!("must be 0 to {MAX_PRICE} minor units"),
            );
        }
        if v.attributes.len() > 20 {
            fields.add(format!("variants[{i}].attributes"), "at most 20 attributes");
        }
        for (key, value) in &v.attributes {
            if !valid_attribute_key(key) {
                fields.add(
                    format!("variants[{i}].attributes.{key}"),
                    "names are 1 to 40 of a-z 0-9 _",
                );
            }
            if value.is_empty() || value.chars().count() > 100 {
                fields.add(
                    format!("variants[{i}].attributes.{key}"),
                    "values are 1 to 100 characters",
                );
            }
        }
    }
}

/// The status as stored.
pub fn status_str(status: ProductStatus) -> &'static str {
    match status {
        ProductStatus::Draft => "draft",
        ProductStatus::Active => "active",
        ProductStatus::Archived => "archived",
    }
}

fn parse_status(s: &str) -> ProductStatus {
    match s {
        "active" => ProductStatus::Active,
        "archived" => ProductStatus::Archived,
        _ => ProductStatus::Draft,
    }
}

/// Reads a changed product back and writes `product.updated` for it, in the caller's
/// transaction.
pub async fn announce_update(conn: &mut PgConnection, id: Uuid) -> Result<Product, Error> {
    let product = get(conn, id)
        .await?
        .expect("the caller holds the product's lock");
    let event = tienda_events::catalog::ProductUpdated {
        product_id: id,
        version: product.version,
        status: product.status,
        variants: summaries(&product.variants),
    };
    tienda_kit::outbox::enqueue(conn, tienda_events::Envelope::new(crate::SOURCE, event)).await?;
    Ok(product)
}

/// Variants as events describe them.
pub fn summaries(variants: &[Variant]) -> Vec<VariantSummary> {
    variants
        .iter()
        .map(|v| VariantSummary {
            sku: v.sku.clone(),
            price: v.price,
        })
        .collect()
}

const PRODUCT_COLUMNS: &str = "p.id, p.name, p.description, p.status, p.images, p.version, \
     p.created_at, p.updated_at, \
     COALESCE((SELECT array_agg(pc.category_id ORDER BY pc.category_id) FROM product_categories pc \
               WHERE pc.product_id = p.id), '{}') AS category_ids, \
     COALESCE((SELECT jsonb_agg(jsonb_build_object('sku', v.sku, 'attributes', v.attributes, \
               'price', jsonb_build_object('amount', v.price_amount, 'currency', v.currency)) \
               ORDER BY v.position) FROM variants v \
               WHERE v.product_id = p.id AND v.removed_at IS NULL), '[]') AS variants";

/// A product as [`PRODUCT_COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
struct ProductRow {
    id: Uuid,
    name: String,
    description: String,
    status: String,
    category_ids: Vec<Uuid>,
    images: Vec<String>,
    #[sqlx(json)]
    variants: Vec<Variant>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: row.id,
            name: row.name,
            description: row.description,
            status: parse_status(&row.status),
            category_ids: row.category_ids,
            images: row.images,
            variants: row.variants,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A live (not deleted) product.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Product>, Error> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.id = $1 AND p.deleted_at IS NULL"
    );
    let row: Option<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Product::from))
}

/// Live products by id, in the order of `ids`.
pub async fn get_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Product>, Error> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM unnest($1::uuid[]) WITH ORDINALITY AS w(id, n) \
         JOIN products p ON p.id = w.id WHERE p.deleted_at IS NULL ORDER BY w.n"
    );
    let rows: Vec<ProductRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(Product::from).collect())
}

/// Locks a live product for a change and returns its version.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT version FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Fails with a field error for each category that does not exist.
pub async fn check_categories_exist(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), Error> {
    let missing: Vec<Uuid> = sqlx::query_scalar(
        "SELECT w.id FROM unnest($1::uuid[]) AS w(id) \
         WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE c.id = w.id)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut fields = Fields::default();
    for id in missing {
        fields.add("category_ids", format!("category {id} does not exist"));
    }
    fields.into_result()
}

/// Inserts a product with its variants, categories and (empty) stock rows.
pub async fn insert(conn: &mut PgConnection, id: Uuid, new: &NewProduct) -> Result<(), Error> {
    let (min_price, currency) = price_summary(&new.variants);
    // The search summaries the triggers keep, written with the row so that adding its
    // variants and categories does not write it a second time.
    let attributes: BTreeSet<String> = new
        .variants
        .iter()
        .flat_map(|v| v.attributes.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let categories: BTreeSet<Uuid> = new.category_ids.iter().copied().collect();
    sqlx::query(
        "INSERT INTO products (id, name, description, status, images, min_price, currency, \
             attribute_summary, category_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(new.name.trim())
    .bind(&new.description)
    .bind(status_str(new.status))
    .bind(&new.images)
    .bind(min_price)
    .bind(currency)
    .bind(attributes.into_iter().collect::<Vec<_>>())
    .bind(categories.into_iter().collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    set_categories(conn, id, &new.category_ids).await?;
    set_variants(conn, id, &new.variants).await
}

fn price_summary(variants: &[Variant]) -> (i64, String) {
    let min = variants.iter().map(|v| v.price.amount).min().unwrap_or(0);
    let currency = variants
        .first()
        .map(|v| v.price.currency.to_string())
        .unwrap_or_else(|| "EUR".into());
    (min, currency)
}

/// Applies a patch to a locked product; bumps its version.
pub async fn update(conn: &mut PgConnection, id: Uuid, patch: &ProductPatch) -> Result<(), Error> {
    let prices = patch.variants.as_deref().map(price_summary);
    sqlx::query(
        "UPDATE products SET \
           name = COALESCE($2, name), description = COALESCE($3, description), \
           status = COALESCE($4, status), images = COALESCE($5, images), \
           min_price = COALESCE($6, min_price), currency = COALESCE($7, currency), \
           version = version + 1, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.name.as_deref().map(str::trim))
    .bind(&patch.description)
    .bind(patch.status.map(status_str))
    .bind(&patch.images)
    .bind(prices.as_ref().map(|p| p.0))
    .bind(prices.as_ref().map(|p| p.1.clone()))
    .execute(&mut *conn)
    .await?;
    if let Some(ids) = &patch.category_ids {
        set_categories(conn, id, ids).await?;
    }
    if let Some(variants) = &patch.variants {
        set_variants(conn, id, variants).await?;
    }
    Ok(())
}

/// Soft-deletes a locked product: it leaves listings and search; its SKUs stay for orders.
pub async fn soft_delete(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query(
        "UPDATE products SET deleted_at = now(), version = version + 1, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_categories(conn: &mut PgConnection, id: Uuid, ids: &[Uuid]) -> Result<(), Error> {
    check_categories_exist(conn, ids).await?;
    sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO product_categories (product_id, category_id) \
         SELECT $1, c FROM unnest($2::uuid[]) AS c ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes `variants` the product's live variants: new SKUs are added (with a stock row), known
/// ones updated, missing ones marked removed. A SKU of another product is a conflict.
async fn set_variants(
    conn: &mut PgConnection,
    id: Uuid,
    variants: &[Variant],
) -> Result<(), Error> {
    let skus: Vec<&str> = variants.iter().map(|v| v.sku.as_str()).collect();
    let taken: Vec<String> = sqlx::query_scalar(
        "SELECT sku FROM variants WHERE sku = ANY($1) AND product_id <> $2 ORDER BY sku",
    )
    .bind(&skus)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    if !taken.is_empty() {
        return Err(Error::Conflict(format!(
            "SKU {} belongs to another product; SKUs are unique across the catalog",
            taken.join(", ")
        )));
    }
    let positions: Vec<i32> = (0..variants.len() as i32).collect();
    let attributes: Vec<serde_json::Value> = variants
        .iter()
        .map(|v| serde_json::to_value(&v.attributes).expect("strings serialize"))
        .collect();
    let amounts: Vec<i64> = variants.iter().map(|v| v.price.amount).collect();
    let currencies: Vec<String> = variants
        .iter()
        .map(|v| v.price.currency.to_string())
        .collect();
    sqlx::query(
        "INSERT INTO variants (sku, product_id, position, attributes, price_amount, currency) \
         SELECT s, $2, p, a, m, c FROM unnest($1::text[], $3::int[], $4::jsonb[], $5::bigint[], $6::text[]) \
              AS w(s, p, a, m, c) \
         ON CONFLICT (sku) DO UPDATE SET position = EXCLUDED.position, \
              attributes = EXCLUDED.attributes, price_amount = EXCLUDED.price_amount, \
              currency = EXCLUDED.currency, removed_at = NULL",
    )
    .bind(&skus)
    .bind(id)
    .bind(&positions)
    .bind(&attributes)
    .bind(&amounts)
    .bind(&currencies)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE variants SET removed_at = now() \
         WHERE product_id = $1 AND removed_at IS NULL AND NOT (sku = ANY($2))",
    )
    .bind(id)
    .bind(&skus)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO inventory (sku) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind(&skus)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
