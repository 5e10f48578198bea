//! Listing and search: PostgreSQL full text (English stemming) ranked name matches first, typos
//! corrected from the words of product names (trigram similarity), filters, sorts, keyset
//! pagination with an opaque cursor, and facet counts over the whole result.
//!
//! Every query stops after a page where it can: ranking is two tiers that are each an
//! index-ordered scan, and filters are conditions on the product row (its attribute summary
//! and category ids, kept by triggers). Only facets read every match, in one pass.

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
    /// Best match first (the default with `q`): products whose name has every word, then
    /// those that need the description; newest first within each.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
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

/// How `q` matches: by its words (full text, stemmed), or — when no product has them — by the
/// words of product names closest to each (typos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    /// No `q`.
    All,
    /// Full text: name (weight A) over description (weight B).
    Words,
    /// Full text on the corrected words.
    Fuzzy,
}

/// The words of `q` typo correction looks at: up to 8, of 3 characters or more (shorter ones
/// are close to everything); the whole query when it has none.
fn fuzzy_words(q: &str) -> Vec<String> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .take(8)
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        vec![q.to_lowercase()]
    } else {
        words
    }
}

/// Which of a word query's matches one query reads. Relevance ranks products whose name has
/// every word (`Name`, rank 2) above those that need their description too (`Rest`, rank 1),
/// newest first within each: each is an index-ordered scan that stops after a page, where
/// ranking every match by `ts_rank` visited all of them (18,000 rows for a common word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Every match.
    Any,
    /// The name has every word.
    Name,
    /// The rest.
    Rest,
}

impl Tier {
    fn rank(self) -> f64 {
        match self {
            Tier::Name => 2.0,
            Tier::Rest => 1.0,
            Tier::Any => 0.0,
        }
    }
}

/// What one search reads, worked out before its queries.
struct Plan<'a> {
    params: &'a SearchParams,
    mode: Mode,
    /// Typos: for each word of `q`, the name words that replace it (any of them matches).
    corrected: Vec<Vec<String>>,
    /// The category filter's subtree, read first so the planner sees the ids (as a parameter
    /// of an init plan it guessed 0.5 % of the catalog, and a 20 % category took 27 ms).
    categories: Option<Vec<Uuid>>,
}

impl Plan<'_> {
    /// The tsquery of `q`, or of its corrections.
    fn push_tsquery(&self, b: &mut QueryBuilder<Postgres>) {
        if self.mode == Mode::Fuzzy {
            for (i, group) in self.corrected.iter().enumerate() {
                b.push(if i == 0 { "((" } else { " && (" });
                for (j, word) in group.iter().enumerate() {
                    if j > 0 {
                        b.push(" || ");
                    }
                    b.push("plainto_tsquery('english', ")
                        .push_bind(word.clone())
                        .push(")");
                }
                b.push(")");
            }
            b.push(")");
        } else {
            b.push("websearch_to_tsquery('english', ")
                .push_bind(self.params.q.clone().unwrap_or_default())
                .push(")");
        }
    }

    /// `SELECT id, min_price, rank[, facet values] FROM products p WHERE <filters>`.
    fn matched(&self, b: &mut QueryBuilder<Postgres>, tier: Tier, facet_values: bool) {
        let params = self.params;
        b.push(format!(
            "SELECT p.id, p.min_price, {:.1}::float8 AS rank",
            tier.rank()
        ));
        if facet_values {
            // Every facet value of the product in one array: `key=value`, category ids,
            // `#<price bucket>`.
            b.push(
                ", p.attribute_summary || p.category_ids::text[] || \
                 ('#' || width_bucket(p.min_price, ",
            )
            .push_bind(PRICE_BOUNDS.to_vec())
            .push(")) AS facet_values");
        }
        b.push(" FROM products p WHERE p.deleted_at IS NULL AND p.status = ")
            .push_bind(params.status.clone().unwrap_or_else(|| "active".into()));
        if self.mode != Mode::All {
            match tier {
                Tier::Any => {
                    b.push(" AND p.search @@ ");
                    self.push_tsquery(b);
                }
                Tier::Name => {
                    b.push(" AND p.name_search @@ ");
                    self.push_tsquery(b);
                }
                Tier::Rest => {
                    b.push(" AND p.search @@ ");
                    self.push_tsquery(b);
                    b.push(" AND NOT p.name_search @@ ");
                    self.push_tsquery(b);
                }
            }
        }
        if let Some(categories) = &self.categories {
            b.push(" AND p.category_ids && ")
                .push_bind(categories.clone());
        }
        if let Some(min) = params.min_price {
            b.push(" AND p.min_price >= ").push_bind(min);
        }
        if let Some(max) = params.max_price {
            b.push(" AND p.min_price <= ").push_bind(max);
        }
        if !params.attributes.is_empty() {
            // The product's summary has each value; a variant must have all of them.
            let wanted: Vec<String> = params
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            b.push(" AND p.attribute_summary @> ").push_bind(wanted);
            if params.attributes.len() > 1 {
                b.push(
                    " AND EXISTS (SELECT 1 FROM variants v WHERE v.product_id = p.id \
                     AND v.removed_at IS NULL AND v.attributes @> ",
                )
                .push_bind(sqlx::types::Json(params.attributes.clone()))
                .push(")");
            }
        }
        if let Some(in_stock) = params.in_stock {
            b.push(if in_stock { " AND " } else { " AND NOT " }).push(
                "EXISTS (SELECT 1 FROM variants v JOIN inventory i ON i.sku = v.sku \
                 WHERE v.product_id = p.id AND v.removed_at IS NULL AND i.on_hand > i.reserved)",
            );
        }
    }
}

/// How close a name word must be to a query word to replace it (trigram similarity):
/// "lether" → "leather" is 0.5, "chir" → "chair" 0.375.
const WORD_SIMILARITY: f32 = 0.3;

/// A name word within this much of the closest one is taken too.
const CLOSE_ENOUGH: f32 = 0.1;

/// For each of `words`, the name words that replace it: the closest and any nearly as close
/// (up to three); an empty group when none is close.
async fn corrections(conn: &mut PgConnection, words: &[String]) -> Result<Vec<Vec<String>>, Error> {
    let found: Vec<(i64, String, f32)> = sqlx::query_as(
        "SELECT w.n, c.word, c.s FROM unnest($1::text[]) WITH ORDINALITY AS w(q, n) \
         CROSS JOIN LATERAL (SELECT word, similarity(word, w.q) AS s FROM search_words \
             WHERE word % w.q AND similarity(word, w.q) >= $2 \
               AND numnode(plainto_tsquery('english', word)) > 0 \
             ORDER BY s DESC, word LIMIT 3) c \
         ORDER BY w.n, c.s DESC",
    )
    .bind(words)
    .bind(WORD_SIMILARITY)
    .fetch_all(&mut *conn)
    .await?;
    let mut groups = vec![Vec::new(); words.len()];
    for (n, word, similarity) in found {
        let group: &mut Vec<(String, f32)> = &mut groups[(n - 1) as usize];
        if group
            .first()
            .is_none_or(|(_, best)| similarity >= best - CLOSE_ENOUGH)
        {
            group.push((word, similarity));
        }
    }
    Ok(groups
        .into_iter()
        .map(|g| g.into_iter().map(|(w, _)| w).collect())
        .collect())
}

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
    let mut tx = conn.begin().await?;
    let categories = match params.category {
        Some(category) => Some(
            sqlx::query_scalar(
                "WITH RECURSIVE tree(id) AS (SELECT id FROM categories WHERE id = $1 \
                 UNION SELECT c.id FROM categories c JOIN tree t ON c.parent_id = t.id) \
                 SELECT id FROM tree",
            )
            .bind(category)
            .fetch_all(&mut *tx)
            .await?,
        ),
        None => None,
    };
    let mut plan = Plan {
        params,
        mode: if params.q.is_some() {
            Mode::Words
        } else {
            Mode::All
        },
        corrected: Vec::new(),
        categories,
    };
    if let Some(q) = &params.q {
        // Later pages keep the first page's mode, so a product added meanwhile cannot
        // switch it.
        plan.mode = match &cursor {
            Some(c) => c.m,
            None => {
                let mut b = QueryBuilder::new("SELECT EXISTS (");
                plan.matched(&mut b, Tier::Any, false);
                b.push(")");
                let any: bool = b
                    .build_query_scalar()
                    .persistent(false)
                    .fetch_one(&mut *tx)
                    .await?;
                if any { Mode::Words } else { Mode::Fuzzy }
            }
        };
        if plan.mode == Mode::Fuzzy {
            plan.corrected = corrections(&mut tx, &fuzzy_words(q)).await?;
            if plan.corrected.iter().any(Vec::is_empty) {
                // A word nothing is close to: nothing matches every word.
                tx.commit().await?;
                return Ok(ProductPage {
                    items: Vec::new(),
                    next_cursor: None,
                    facets: params.facets.then(Facets::default),
                });
            }
        }
    }
    let page = page(&mut tx, &plan, cursor, facet_cache).await?;
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

/// Up to `take` rows of `tier` in `sort` order, after `after` when given. Planned with this
/// request's values each time (an unnamed statement): a plan cached for one word would be
/// used for the next, and a scan that suits a common word is slow for a rare one.
async fn rows(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    tier: Tier,
    after: Option<&Cursor>,
    take: i64,
) -> Result<Vec<Ranked>, Error> {
    let sort = plan.params.sort();
    let mut b = QueryBuilder::new("WITH matched AS (");
    plan.matched(&mut b, tier, false);
    b.push(") SELECT id, min_price, rank FROM matched");
    if let Some(c) = after {
        let (column, op) = match sort {
            // Within a tier every rank is the same: the id alone is the key.
            Sort::Relevance | Sort::Newest => ("", "<"),
            Sort::PriceAsc => ("min_price::float8", ">"),
            Sort::PriceDesc => ("min_price::float8", "<"),
        };
        if column.is_empty() {
            b.push(format!(" WHERE id {op} ")).push_bind(c.id);
        } else {
            b.push(format!(" WHERE ({column}, id) {op} ("))
                .push_bind(c.k)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
    }
    b.push(match sort {
        Sort::Relevance | Sort::Newest => " ORDER BY id DESC",
        Sort::PriceAsc => " ORDER BY min_price ASC, id ASC",
        Sort::PriceDesc => " ORDER BY min_price DESC, id DESC",
    });
    b.push(" LIMIT ").push_bind(take);
    Ok(b.build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?)
}

async fn page(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    cursor: Option<Cursor>,
    facet_cache: &FacetCache,
) -> Result<ProductPage, Error> {
    let params = plan.params;
    let sort = params.sort();
    let limit = params.limit.unwrap_or(20);

    let rows = if plan.mode != Mode::All && sort == Sort::Relevance {
        // Name matches, then the rest; a cursor says which tier the last page ended in.
        let mut rows = Vec::new();
        let mut after = cursor.as_ref();
        for tier in [Tier::Name, Tier::Rest] {
            if after.is_some_and(|c| c.k < tier.rank()) {
                continue;
            }
            let more = self::rows(conn, plan, tier, after, limit + 1 - rows.len() as i64);
            rows.extend(more.await?);
            after = None;
            if rows.len() as i64 > limit {
                break;
            }
        }
        rows
    } else {
        self::rows(conn, plan, Tier::Any, cursor.as_ref(), limit + 1).await?
    };

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
                m: plan.mode,
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
                let computed = facets(conn, plan).await?;
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

/// The three facets in one pass over the matches: each product's attribute summary, category
/// ids and price bucket are on its row, unnested and counted together (three passes, joining
/// variants and product categories, took 90-125 ms for a common word).
async fn facets(conn: &mut PgConnection, plan: &Plan<'_>) -> Result<Facets, Error> {
    let mut b =
        QueryBuilder::new("SELECT v, count(*) FROM (SELECT unnest(m.facet_values) AS v FROM (");
    plan.matched(&mut b, Tier::Any, true);
    b.push(") m) f GROUP BY v");
    let counted: Vec<(String, i64)> = b
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;

    let mut facets = Facets::default();
    let mut buckets = BTreeMap::new();
    for (value, count) in counted {
        if let Some(bucket) = value.strip_prefix('#') {
            buckets.extend(bucket.parse::<usize>().ok().map(|b| (b, count)));
        } else if let Some((name, value)) = value.split_once('=') {
            facets.attributes.push(AttributeCount {
                name: name.to_owned(),
                value: value.to_owned(),
                count,
            });
        } else if let Ok(id) = value.parse() {
            facets.categories.push(CategoryCount { id, count });
        }
    }
    facets
        .categories
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    facets.categories.truncate(50);
    facets
        .attributes
        .sort_by(|a, b| (b.count, &a.name, &a.value).cmp(&(a.count, &b.name, &b.value)));
    facets.attributes.truncate(100);
    facets.price = buckets
        .into_iter()
        .map(|(i, count)| PriceBucket {
            min: if i == 0 { 0 } else { PRICE_BOUNDS[i - 1] },
            max: PRICE_BOUNDS.get(i).copied(),
            count,
        })
        .collect();
    Ok(facets)
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
