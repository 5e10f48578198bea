//! Bulk: import (NDJSON or CSV, streamed) and bulk price updates. Each row runs in its own
//! savepoint — a row applies whole or not at all — and gets its own result; a bad row never
//! stops the rows after it. Import is an upsert keyed by SKU, so running a file twice changes
//! nothing the second time.
//!
//! A row is one product. NDJSON: the body of `POST /v1/products` per line. CSV: a header line,
//! then one product with one variant per line; columns `sku`, `name`, `price_amount`,
//! `currency` (required), `description`, `status`, `attributes` (`color=red;size=M`),
//! `category_ids` and `images` (`;`-separated), `on_hand` (optional stock count).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection};
use tienda_events::{
    Envelope,
    catalog::{ProductCreated, ProductStatus},
    money::Money,
};
use tienda_kit::outbox;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    SOURCE,
    catalog::{self, NewProduct, ProductPatch, Variant},
    error::Error,
    inventory::{self, Adjustment},
};

/// What happened to one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowResult {
    /// 1-based line number in the file (CSV: the header is line 1).
    pub line: usize,
    /// `created`, `updated`, `unchanged` or `error`.
    pub outcome: String,
    /// The product, when the row applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Why the row was not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<tienda_kit::FieldError>,
}

/// The import's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Rows created.
    pub created: usize,
    /// Rows that updated a product.
    pub updated: usize,
    /// Rows that matched the product as it was.
    pub unchanged: usize,
    /// Rows not applied.
    pub failed: usize,
    /// Per row, in file order.
    pub results: Vec<RowResult>,
}

impl ImportReport {
    pub(crate) fn new() -> Self {
        Self {
            created: 0,
            updated: 0,
            unchanged: 0,
            failed: 0,
            results: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        line: usize,
        outcome: Result<(&'static str, Option<Uuid>), Error>,
    ) {
        let result = match outcome {
            Ok((kind, id)) => {
                match kind {
                    "created" => self.created += 1,
                    "updated" => self.updated += 1,
                    _ => self.unchanged += 1,
                }
                RowResult {
                    line,
                    outcome: kind.into(),
                    id,
                    errors: Vec::new(),
                }
            }
            Err(error) => {
                self.failed += 1;
                let problem = tienda_kit::Problem::from(error);
                let errors = if problem.errors.is_empty() {
                    vec![tienda_kit::FieldError {
                        field: String::new(),
                        message: problem.detail.unwrap_or(problem.title),
                    }]
                } else {
                    problem.errors
                };
                RowResult {
                    line,
                    outcome: "error".into(),
                    id: None,
                    errors,
                }
            }
        };
        self.results.push(result);
    }
}

/// One parsed row: a product and, from CSV, an optional stock count for its variant.
#[derive(Debug)]
pub struct Row {
    /// The product.
    pub product: NewProduct,
    /// `on_hand` for the (single) variant.
    pub on_hand: Option<i64>,
}

/// Parses an NDJSON line.
pub fn parse_json_line(line: &str) -> Result<Row, Error> {
    let product = tienda_kit::json::from_slice::<NewProduct>(line.as_bytes()).map_err(|p| {
        Error::Invalid(if p.errors.is_empty() {
            vec![(String::new(), p.detail.unwrap_or(p.title))]
        } else {
            p.errors.into_iter().map(|e| (e.field, e.message)).collect()
        })
    })?;
    Ok(Row {
        product,
        on_hand: None,
    })
}

/// The CSV columns, from the header line.
#[derive(Debug)]
pub struct CsvHeader(Vec<String>);

const CSV_COLUMNS: [&str; 10] = [
    "sku",
    "name",
    "price_amount",
    "currency",
    "description",
    "status",
    "attributes",
    "category_ids",
    "images",
    "on_hand",
];

impl CsvHeader {
    /// Reads the header; unknown and missing required columns are errors.
    pub fn parse(record: &csv_async::StringRecord) -> Result<Self, Error> {
        let names: Vec<String> = record.iter().map(|c| c.trim().to_lowercase()).collect();
        let mut problems = Vec::new();
        for name in &names {
            if !CSV_COLUMNS.contains(&name.as_str()) {
                problems.push((
                    name.clone(),
                    format!("is not a column; columns are {}", CSV_COLUMNS.join(", ")),
                ));
            }
        }
        for required in ["sku", "name", "price_amount", "currency"] {
            if !names.iter().any(|n| n == required) {
                problems.push((required.to_owned(), "column is missing".to_owned()));
            }
        }
        if problems.is_empty() {
            Ok(Self(names))
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// Reads one record.
    pub fn row(&self, record: &csv_async::StringRecord) -> Result<Row, Error> {
        let get = |name: &str| {
            self.0
                .iter()
                .position(|n| n == name)
                .and_then(|i| record.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let list = |v: Option<&str>| -> Vec<String> {
            v.map(|v| {
                v.split(';')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let amount = match get("price_amount").map(str::parse::<i64>) {
            Some(Ok(a)) => a,
            _ => {
                problems.push((
                    "price_amount".into(),
                    "must be a whole number of minor units".into(),
                ));
                0
            }
        };
        let currency = match get("currency").unwrap_or_default().parse() {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(("currency".into(), format!("{e}")));
                None
            }
        };
        let status = match get("status").unwrap_or("draft") {
            "draft" => ProductStatus::Draft,
            "active" => ProductStatus::Active,
            "archived" => ProductStatus::Archived,
            _ => {
                problems.push(("status".into(), "must be draft, active or archived".into()));
                ProductStatus::Draft
            }
        };
        let mut attributes = BTreeMap::new();
        for pair in list(get("attributes")) {
            match pair.split_once('=') {
                Some((k, v)) => {
                    attributes.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                None => problems.push(("attributes".into(), format!("{pair:?} is not name=value"))),
            }
        }
        let mut category_ids = Vec::new();
        for id in list(get("category_ids")) {
            match id.parse() {
                Ok(id) => category_ids.push(id),
                Err(_) => problems.push(("category_ids".into(), format!("{id:?} is not an id"))),
            }
        }
        let on_hand = match get("on_hand").map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) if n >= 0 => Some(n),
            Some(_) => {
                problems.push(("on_hand".into(), "must be a whole number ≥ 0".into()));
                None
            }
        };
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        Ok(Row {
            product: NewProduct {
                name: get("name").unwrap_or_default().to_owned(),
                description: get("description").unwrap_or_default().to_owned(),
                status,
                category_ids,
                images: list(get("images")),
                variants: vec![Variant {
                    sku: get("sku").unwrap_or_default().to_owned(),
                    attributes,
                    price: Money {
                        amount,
                        currency: currency.expect("checked above"),
                    },
                }],
            },
            on_hand,
        })
    }
}

/// Applies one row in a savepoint: creates the product, or updates the one that owns the
/// row's first SKU; an identical product is left alone.
pub async fn apply(
    conn: &mut PgConnection,
    row: &Row,
    actor: &str,
) -> Result<(&'static str, Uuid), Error> {
    catalog::validate(&row.product)?;
    let mut tx = conn.begin().await?;
    let first = &row.product.variants[0].sku;
    let owner: Option<Uuid> = sqlx::query_scalar(
        "SELECT v.product_id FROM variants v JOIN products p ON p.id = v.product_id \
         WHERE v.sku = $1 AND p.deleted_at IS NULL FOR UPDATE OF p",
    )
    .bind(first)
    .fetch_optional(&mut *tx)
    .await?;
    let (outcome, id) = match owner {
        None => {
            let id = Uuid::now_v7();
            catalog::insert(&mut tx, id, &row.product).await?;
            let event = ProductCreated {
                product_id: id,
                name: row.product.name.trim().to_owned(),
                status: row.product.status,
                variants: catalog::summaries(&row.product.variants),
            };
            outbox::enqueue(&mut tx, Envelope::new(SOURCE, event)).await?;
            ("created", id)
        }
        Some(id) => {
            let current = catalog::get(&mut tx, id).await?.expect("locked above");
            let mut wanted_categories = row.product.category_ids.clone();
            wanted_categories.sort();
            let same = current.name == row.product.name.trim()
                && current.description == row.product.description
                && current.status == row.product.status
                && current.images == row.product.images
                && current.category_ids == wanted_categories
                && current.variants == row.product.variants;
            if same {
                ("unchanged", id)
            } else {
                let patch = ProductPatch {
                    name: Some(row.product.name.clone()),
                    description: Some(row.product.description.clone()),
                    status: Some(row.product.status),
                    category_ids: Some(row.product.category_ids.clone()),
                    images: Some(row.product.images.clone()),
                    variants: Some(row.product.variants.clone()),
                };
                catalog::update(&mut tx, id, &patch).await?;
                catalog::announce_update(&mut tx, id).await?;
                ("updated", id)
            }
        }
    };
    let mut stock_changed = false;
    if let Some(on_hand) = row.on_hand {
        let current = inventory::stock(&mut tx, first).await?.map(|s| s.on_hand);
        if current != Some(on_hand) {
            let adjustment = Adjustment {
                on_hand,
                reason: "import".into(),
                low_stock_threshold: None,
            };
            inventory::adjust(&mut tx, first, &adjustment, actor).await?;
            stock_changed = true;
        }
    }
    tx.commit().await?;
    let outcome = if outcome == "unchanged" && stock_changed {
        "updated"
    } else {
        outcome
    };
    Ok((outcome, id))
}

/// `POST /v1/products/prices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceUpdates {
    /// 1-1000 SKUs with their new prices.
    pub items: Vec<PriceUpdate>,
}

/// A SKU's new price.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceUpdate {
    /// Stock keeping unit.
    pub sku: String,
    /// The new price, in the product's currency.
    pub price: Money,
}

/// Sets one SKU's price in a savepoint: `product.updated`.
pub async fn set_price(
    conn: &mut PgConnection,
    update: &PriceUpdate,
) -> Result<(&'static str, Uuid), Error> {
    if !(0..=catalog::MAX_PRICE).contains(&update.price.amount) {
        return Err(Error::Invalid(vec![(
            "price.amount".into(),
            format!("must be 0 to {} minor units", catalog::MAX_PRICE),
        )]));
    }
    let mut tx = conn.begin().await?;
    let owner: Option<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT p.id, v.price_amount, p.currency FROM variants v JOIN products p ON p.id = v.product_id \
         WHERE v.sku = $1 AND v.removed_at IS NULL AND p.deleted_at IS NULL FOR UPDATE OF p",
    )
    .bind(&update.sku)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, amount, currency)) = owner else {
        return Err(Error::NotFound(format!(
            "No SKU {} in the catalog.",
            update.sku
        )));
    };
    if currency != update.price.currency.as_str() {
        return Err(Error::Invalid(vec![(
            "price.currency".into(),
            format!("the product is priced in {currency}"),
        )]));
    }
    if amount == update.price.amount {
        return Ok(("unchanged", id));
    }
    sqlx::query("UPDATE variants SET price_amount = $2 WHERE sku = $1")
        .bind(&update.sku)
        .bind(update.price.amount)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE products SET min_price = (SELECT min(price_amount) FROM variants \
           WHERE product_id = $1 AND removed_at IS NULL), version = version + 1, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    catalog::announce_update(&mut tx, id).await?;
    tx.commit().await?;
    Ok(("updated", id))
}
