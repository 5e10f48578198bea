//! Listing and search: PostgreSQL full text (name weighted over description, English stemming)
//! plus trigram word similarity on the name for typos, filters, sorts, keyset pagination with
//! an opaque cursor, and facet counts over the whole result.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    catalog::{self, Product, valid_attribute_key},
    error::{Error, Fields},
};

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best match first (the default with `q`).
    Relevance,
    /// Cheapest first (by the lowest variant price).
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Newest first (the default without `q`).
    Newest,
}

/// The `status` a listing may ask for (documentation only; the parameter is checked by hand).
#[derive(Debug, Clone, Copy, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum StatusFilter {
    /// Not yet published.
    Draft,
    /// On sale (the default).
    Active,
    /// Withdrawn.
    Archived,
}

/// `GET /v1/products` parameters. Also `attr.<name>=<value>` (repeatable for different
/// names): a variant must have all of them.
#[derive(Debug, Default, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to search for; typos are tolerated.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// A category id: the category and its subtree.
    pub category: Option<Uuid>,
    /// Lowest price, minor units (compared with the product's lowest variant price).
    #[param(minimum = 0)]
    pub min_price: Option<i64>,
    /// Highest price, minor units.
    #[param(minimum = 0)]
    pub max_price: Option<i64>,
    /// Only products with a variant in stock.
    pub in_stock: Option<bool>,
    /// `relevance`, `price_asc`, `price_desc`, `newest`.
    #[param(inline)]
    pub sort: Option<Sort>,
    /// 1-100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `draft`, `active` (default) or `archived`; other than `active` needs the admin role.
    #[param(inline, value_type = Option<StatusFilter>)]
    pub status: Option<String>,
    /// `true`: include facet counts over all results (cached for up to a minute). Optional,
    /// default `false`.
    #[param(required = false, value_type = Option<bool>)]
    pub facets: bool,
    /// `attr.<name>` filters.
    #[param(ignore)]
    pub attributes: BTreeMap<String, String>,
}

impl SearchParams {
    /// Reads the query string; unknown parameters and bad values are field errors.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Error> {
        let mut params = Self::default();
        let mut fields = Fields::default();
        for (key, value) in pairs {
            match key.as_str() {
                "q" => params.q = Some(value.trim().to_owned()).filter(|q| !q.is_empty()),
                "category" => match value.parse() {
                    Ok(id) => params.category = Some(id),
                    Err(_) => fields.add("category", "must be a category id (UUID)"),
                },
                "min_price" | "max_price" => match value.parse::<i64>() {
                    Ok(v) if v >= 0 => {
                        if key == "min_price" {
                            params.min_price = Some(v);
                        } else {
                            params.max_price = Some(v);
                        }
                    }
                    _ => fields.add(key.clone(), "must be a whole number of minor units ≥ 0"),
                },
                "in_stock" => match value.as_str() {
                    "true" => params.in_stock = Some(true),
                    "false" => params.in_stock = Some(false),
                    _ => fields.add("in_stock", "must be true or false"),
                },
                "sort" => match serde_json::from_value(serde_json::Value::String(value.clone())) {
                    Ok(sort) => params.sort = Some(sort),
                    Err(_) => {
                        fields.add("sort", "must be relevance, price_asc, price_desc or newest")
                    }
                },
                "limit" => match value.parse::<i64>() {
                    Ok(v) if (1..=100).contains(&v) => params.limit = Some(v),
                    _ => fields.add("limit", "must be 1 to 100"),
                },
                "cursor" => params.cursor = Some(value.clone()),
                "facets" => match value.as_str() {
                    "true" => params.facets = true,
                    "false" => params.facets = false,
                    _ => fields.add("facets", "must be true or false"),
                },
                "status" => match value.as_str() {
                    "draft" | "active" | "archived" => params.status = Some(value.clone()),
                    _ => fields.add("status", "must be draft, active or archived"),
                },
                other => match other.strip_prefix("attr.") {
                    Some(name) if valid_attribute_key(name) => {
                        params.attributes.insert(name.to_owned(), value.clone());
                    }
                    Some(_) => fields.add(key.clone(), "attribute names are 1 to 40 of a-z 0-9 _"),
                    None => fields.add(key.clone(), "is not a parameter of this endpoint"),
                },
            }
        }
        if let Some(q) = &params.q
            && q.chars().count() > 200
        {
            fields.add("q", "must be at most 200 characters");
        }
        fields.into_result()?;
        Ok(params)
    }

    /// What facet counts depend on: the filters, not the page.
    fn facet_key(&self) -> String {
        serde_json::to_string(&(
            &self.q,
            self.category,
            self.min_price,
            self.max_price,
            self.in_stock,
            &self.status,
            &self.attributes,
        ))
        .expect("plain data")
    }

    fn sort(&self) -> Sort {
        match (self.sort, &self.q) {
            (Some(Sort::Relevance), None) => Sort::Newest,
            (Some(sort), _) => sort,
            (None, Some(_)) => Sort::Relevance,
            (None, None) => Sort::Newest,
        }
    }
}

/// Where a page ends: the sort it belongs to, the last row's sort key and id.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    s: Sort,
    m: Mode,
    k: f64,
    id: Uuid,
}

impl Cursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).expect("plain data"))
    }

    fn decode(raw: &str, sort: Sort) -> Result<Self, Error> {
        let invalid = || {
            Error::Invalid(vec![(
                "cursor".into(),
                "is not a cursor from this listing; start without one".into(),
            )])
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.s != sort {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// A page of products.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    /// The products.
    pub items: Vec<Product>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
    /// Counts over all results, with `facets=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<Facets>,
}

/// Facet counts by filter set; cleared when a product changes, and a minute at most.
pub type FacetCache = moka::future::Cache<String, std::sync::Arc<Facets>>;

/// Facet counts: how many results fall in each category, price range and attribute value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Facets {
    /// By category the results are directly in, most first.
    pub categories: Vec<CategoryCount>,
    /// By price range.
    pub price: Vec<PriceBucket>,
    /// By attribute value, most first.
    pub attributes: Vec<AttributeCount>,
}

/// Results in one category.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct CategoryCount {
    /// The category.
    pub id: Uuid,
    /// Products.
    pub count: i64,
}

/// Results in a price range `[min, max)`, minor units.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceBucket {
    /// Inclusive.
    pub min: i64,
    /// Exclusive; `null` for the last range.
    pub max: Option<i64>,
    /// Products.
    pub count: i64,
}

/// Results with a variant having one attribute value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AttributeCount {
    /// Attribute name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Products.
    pub count: i64,
}

/// Price range bounds in minor units.
const PRICE_BOUNDS: [i64; 6] = [1_000, 2_500, 5_000, 10_000, 25_000, 50_000];

/// How `q` matches: by words (full text, stemmed), or — when no product has the words — by
/// trigram similarity of the name, which forgives typos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// No `q`.
    All,
    /// Full text: name (weight A) over description (weight B).
    Words,
    /// Trigram word similarity on the name.
    Fuzzy,
}

/// The words of `q` fuzzy matching looks for: up to 8, of 3 characters or more (shorter ones
/// are close to everything); the whole query when it has none.
fn fuzzy_words(q: &str) -> Vec<String> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .take(8)
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        vec![q.to_owned()]
    } else {
        words
    }
}

/// `SELECT id, min_price, rank FROM products p WHERE <filters>` for `params`.
fn matched(b: &mut QueryBuilder<Postgres>, params: &SearchParams, mode: Mode) {
    b.push("SELECT p.id, p.min_price, ");
    let q = params.q.clone().unwrap_or_default();
    match mode {
        Mode::Words => {
            b.push("ts_rank(p.search, websearch_to_tsquery('english', ")
                .push_bind(q.clone())
                .push("))::float8 AS rank");
        }
        Mode::Fuzzy => {
            b.push("(0");
            for word in fuzzy_words(&q) {
                b.push(" + word_similarity(")
                    .push_bind(word)
                    .push(", p.name)");
            }
            b.push(")::float8 AS rank");
        }
        Mode::All => {
            b.push("0::float8 AS rank");
        }
    }
    b.push(" FROM products p WHERE p.deleted_at IS NULL AND p.status = ")
        .push_bind(params.status.clone().unwrap_or_else(|| "active".into()));
    match mode {
        Mode::Words => {
            b.push(" AND p.search @@ websearch_to_tsquery('english', ")
                .push_bind(q)
                .push(")");
        }
        Mode::Fuzzy => {
            // Every word must be close to a word of the name: one trigram index condition
            // per word, which PostgreSQL intersects (the whole phrase at once is 5x slower).
            for word in fuzzy_words(&q) {
                b.push(" AND ").push_bind(word).push(" <% p.name");
            }
        }
        Mode::All => {}
    }
    if let Some(category) = params.category {
        b.push(" AND EXISTS (WITH RECURSIVE tree(id) AS (SELECT id FROM categories WHERE id = ")
            .push_bind(category)
            .push(
                " UNION SELECT c.id FROM categories c JOIN tree t ON c.parent_id = t.id) \
             SELECT 1 FROM product_categories pc JOIN tree ON tree.id = pc.category_id \
             WHERE pc.product_id = p.id)",
            );
    }
    if let Some(min) = params.min_price {
        b.push(" AND p.min_price >= ").push_bind(min);
    }
    if let Some(max) = params.max_price {
        b.push(" AND p.min_price <= ").push_bind(max);
    }
    if !params.attributes.is_empty() {
        b.push(
            " AND EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id \
             AND v.removed_at IS NULL AND v.attributes @> ",
        )
        .push_bind(sqlx::types::Json(params.attributes.clone()))
        .push(")");
    }
    if let Some(in_stock) = params.in_stock {
        b.push(if in_stock { " AND " } else { " AND NOT " }).push(
            "EXISTS (SELECT 1 FROM variants v JOIN inventory i ON i.sku = v.sku \
             WHERE v.product_id = p.id AND v.removed_at IS NULL AND i.on_hand > i.reserved)",
        );
    }
}

/// How close a word of a name must be to the query to match: 0.4 finds one-letter typos in
/// words of six letters ("lether" → "Leather" is 0.5; PostgreSQL's default 0.6 misses it).
const WORD_SIMILARITY: &str = "0.4";

/// One page of results (and the facets, when asked for).
pub async fn search(
    conn: &mut PgConnection,
    params: &SearchParams,
    facet_cache: &FacetCache,
) -> Result<ProductPage, Error> {
    let cursor = params
        .cursor
        .as_deref()
        .map(|raw| Cursor::decode(raw, params.sort()))
        .transpose()?;
    if params.q.is_none() {
        return page(conn, params, Mode::All, cursor, facet_cache).await;
    }
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('pg_trgm.word_similarity_threshold', $1, true)")
        .bind(WORD_SIMILARITY)
        .execute(&mut *tx)
        .await?;
    // Later pages keep the first page's mode, so a product added meanwhile cannot switch it.
    let mode = match &cursor {
        Some(c) => c.m,
        None => {
            let mut b = QueryBuilder::new("SELECT EXISTS (");
            matched(&mut b, params, Mode::Words);
            b.push(")");
            let any: bool = b.build_query_scalar().fetch_one(&mut *tx).await?;
            if any { Mode::Words } else { Mode::Fuzzy }
        }
    };
    let page = page(&mut tx, params, mode, cursor, facet_cache).await?;
    tx.commit().await?;
    Ok(page)
}

/// One result of a page's query: what the order and the next cursor need.
#[derive(sqlx::FromRow)]
struct Ranked {
    id: Uuid,
    min_price: i64,
    rank: f64,
}

async fn page(
    conn: &mut PgConnection,
    params: &SearchParams,
    mode: Mode,
    cursor: Option<Cursor>,
    facet_cache: &FacetCache,
) -> Result<ProductPage, Error> {
    let sort = params.sort();
    let limit = params.limit.unwrap_or(20);

    let mut b = QueryBuilder::new("WITH matched AS (");
    matched(&mut b, params, mode);
    b.push(") SELECT id, min_price, rank FROM matched");
    if let Some(c) = &cursor {
        let (column, op) = match sort {
            Sort::Relevance => ("rank", "<"),
            Sort::PriceAsc => ("min_price::float8", ">"),
            Sort::PriceDesc => ("min_price::float8", "<"),
            Sort::Newest => ("", "<"),
        };
        if column.is_empty() {
            b.push(" WHERE id < ").push_bind(c.id);
        } else {
            b.push(format!(" WHERE ({column}, id) {op} ("))
                .push_bind(c.k)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
    }
    b.push(match sort {
        Sort::Relevance => " ORDER BY rank DESC, id DESC",
        Sort::PriceAsc => " ORDER BY min_price ASC, id ASC",
        Sort::PriceDesc => " ORDER BY min_price DESC, id DESC",
        Sort::Newest => " ORDER BY id DESC",
    });
    b.push(" LIMIT ").push_bind(limit + 1);
    let rows: Vec<Ranked> = b.build_query_as().fetch_all(&mut *conn).await?;

    let more = rows.len() as i64 > limit;
    let page: Vec<_> = rows.iter().take(limit as usize).collect();
    let next_cursor = if more {
        page.last().map(|row| {
            let k = match sort {
                Sort::Relevance => row.rank,
                Sort::PriceAsc | Sort::PriceDesc => row.min_price as f64,
                Sort::Newest => 0.0,
            };
            Cursor {
                s: sort,
                m: mode,
                k,
                id: row.id,
            }
            .encode()
        })
    } else {
        None
    };
    let ids: Vec<Uuid> = page.iter().map(|r| r.id).collect();
    let items = catalog::get_many(conn, &ids).await?;
    let facets = if params.facets {
        let key = params.facet_key();
        match facet_cache.get(&key).await {
            Some(found) => Some((*found).clone()),
            None => {
                let computed = facets(conn, params, mode).await?;
                facet_cache
                    .insert(key, std::sync::Arc::new(computed.clone()))
                    .await;
                Some(computed)
            }
        }
    } else {
        None
    };
    Ok(ProductPage {
        items,
        next_cursor,
        facets,
    })
}

async fn facets(
    conn: &mut PgConnection,
    params: &SearchParams,
    mode: Mode,
) -> Result<Facets, Error> {
    let mut b = QueryBuilder::new("WITH matched AS (");
    matched(&mut b, params, mode);
    b.push(
        ") SELECT pc.category_id AS id, count(*) AS count FROM matched m \
         JOIN product_categories pc ON pc.product_id = m.id \
         GROUP BY pc.category_id ORDER BY count DESC, id LIMIT 50",
    );
    let categories = b.build_query_as().fetch_all(&mut *conn).await?;

    let mut b = QueryBuilder::new("WITH matched AS (");
    matched(&mut b, params, mode);
    b.push(") SELECT width_bucket(m.min_price, ")
        .push_bind(PRICE_BOUNDS.to_vec())
        .push(") AS bucket, count(*) AS count FROM matched m GROUP BY bucket ORDER BY bucket");
    let counts: BTreeMap<i32, i64> = b
        .build_query_as::<(i32, i64)>()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let price = (0..=PRICE_BOUNDS.len())
        .filter_map(|i| {
            let count = *counts.get(&(i as i32))?;
            Some(PriceBucket {
                min: if i == 0 { 0 } else { PRICE_BOUNDS[i - 1] },
                max: PRICE_BOUNDS.get(i).copied(),
                count,
            })
        })
        .collect();

    let mut b = QueryBuilder::new("WITH matched AS (");
    matched(&mut b, params, mode);
    b.push(
        ") SELECT kv.key AS name, kv.value AS value, count(DISTINCT m.id) AS count \
         FROM matched m JOIN variants v ON v.product_id = m.id AND v.removed_at IS NULL \
         CROSS JOIN LATERAL jsonb_each_text(v.attributes) AS kv \
         GROUP BY kv.key, kv.value ORDER BY count DESC, name, value LIMIT 100",
    );
    let attributes = b.build_query_as().fetch_all(&mut *conn).await?;
    Ok(Facets {
        categories,
        price,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_read_and_unknown_ones_refused() {
        let p = SearchParams::parse(&pairs(&[
            ("q", " boots "),
            ("attr.color", "red"),
            ("sort", "price_desc"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(p.q.as_deref(), Some("boots"));
        assert_eq!(p.attributes["color"], "red");
        assert_eq!(p.sort(), Sort::PriceDesc);
        let Err(Error::Invalid(fields)) =
            SearchParams::parse(&pairs(&[("colour", "red"), ("limit", "0")]))
        else {
            panic!("invalid")
        };
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["colour", "limit"]);
    }

    #[test]
    fn relevance_without_words_is_newest_and_cursors_belong_to_their_sort() {
        let p = SearchParams::parse(&pairs(&[("sort", "relevance")])).unwrap();
        assert_eq!(p.sort(), Sort::Newest);
        let cursor = Cursor {
            s: Sort::PriceAsc,
            m: Mode::All,
            k: 1999.0,
            id: Uuid::nil(),
        }
        .encode();
        assert!(Cursor::decode(&cursor, Sort::PriceAsc).is_ok());
        assert!(Cursor::decode(&cursor, Sort::Newest).is_err());
        assert!(Cursor::decode("garbage", Sort::Newest).is_err());
    }
}
