//! `/v1/categories`: a tree. Products list in several categories; listing a category includes
//! its subtree.

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row, postgres::PgRow};
use tienda_kit::{Problem, json::Json, jwt::Claims};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppState, check_version, etag_header, if_match};
use crate::error::{Error, Fields};

/// A category.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Category {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// The parent; `null` for a root.
    pub parent_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// URL name, unique: 1-80 of a-z 0-9 -.
    pub slug: String,
    /// The version the `ETag` carries.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// All categories.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CategoryList {
    /// Parents before their children, siblings by name.
    pub items: Vec<Category>,
    /// Always `null`: the tree comes whole.
    pub next_cursor: Option<String>,
}

/// `POST /v1/categories`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategory {
    /// 1-100 characters.
    pub name: String,
    /// Default: from the name.
    #[serde(default)]
    pub slug: Option<String>,
    /// The parent; absent for a root.
    #[serde(default)]
    pub parent_id: Option<Uuid>,
}

/// `PATCH /v1/categories/{id}`; `parent_id: null` makes it a root.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryPatch {
    /// 1-100 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// 1-80 of a-z 0-9 -.
    #[serde(default)]
    pub slug: Option<String>,
    /// A new parent (not the category or one below it).
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub parent_id: Option<Option<Uuid>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').chars().take(80).collect()
}

fn check(fields: &mut Fields, name: Option<&str>, slug: Option<&str>) {
    if let Some(name) = name {
        let len = name.trim().chars().count();
        if len == 0 || len > 100 {
            fields.add("name", "must be 1 to 100 characters");
        }
    }
    if let Some(slug) = slug {
        let ok = (1..=80).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            fields.add("slug", "must be 1 to 80 of a-z 0-9 -");
        }
    }
}

fn category(row: &PgRow) -> Category {
    Category {
        id: row.get("id"),
        parent_id: row.get("parent_id"),
        name: row.get("name"),
        slug: row.get("slug"),
        version: row.get("version"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

const COLUMNS: &str = "id, parent_id, name, slug, version, created_at, updated_at";

async fn load(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<Category, Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM categories WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(category)
        .ok_or_else(|| Error::NotFound(format!("No category {id}.")))
}

fn taken_slug(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("categories_slug_key") => {
            Error::Conflict("Another category has this slug; choose another.".into())
        }
        sqlx::Error::Database(db) if db.constraint() == Some("categories_parent_id_fkey") => {
            Error::Invalid(vec![("parent_id".into(), "no such category".into())])
        }
        _ => Error::Database(err),
    }
}

fn with_etag(status: StatusCode, category: Category) -> Response {
    let tag = etag_header(category.version);
    let mut response = (status, Json(category)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// The whole tree, parents first.
#[utoipa::path(get, path = "/v1/categories", tag = "categories",
    responses((status = 200, body = CategoryList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<CategoryList>, Error> {
    let rows = sqlx::query(
        "WITH RECURSIVE tree AS ( \
           SELECT c.*, ARRAY[c.name, c.id::text] AS path FROM categories c WHERE parent_id IS NULL \
           UNION ALL \
           SELECT c.*, t.path || ARRAY[c.name, c.id::text] FROM categories c JOIN tree t ON c.parent_id = t.id) \
         SELECT id, parent_id, name, slug, version, created_at, updated_at FROM tree ORDER BY path",
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(CategoryList {
        items: rows.iter().map(category).collect(),
        next_cursor: None,
    }))
}

/// One category.
#[utoipa::path(get, path = "/v1/categories/{id}", tag = "categories",
    params(("id" = Uuid, Path, description = "The category's id")),
    responses((status = 200, body = Category, headers(("ETag" = String))),
              (status = 404, body = Problem)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<Uuid>) -> Result<Response, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(with_etag(StatusCode::OK, load(&mut conn, id, false).await?))
}

/// Creates a category (admin).
#[utoipa::path(post, path = "/v1/categories", tag = "categories", request_body = NewCategory,
    responses((status = 201, body = Category), (status = 409, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Json(new): Json<NewCategory>,
) -> Result<Response, Error> {
    let slug = new.slug.clone().unwrap_or_else(|| slugify(&new.name));
    let mut fields = Fields::default();
    check(&mut fields, Some(&new.name), Some(&slug));
    fields.into_result()?;
    let id = Uuid::now_v7();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO categories (id, parent_id, name, slug) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(new.parent_id)
    .bind(new.name.trim())
    .bind(&slug)
    .fetch_one(&state.db)
    .await
    .map_err(taken_slug)?;
    Ok(with_etag(StatusCode::CREATED, category(&row)))
}

/// Renames or moves a category (admin; `If-Match` required). A move under itself or its own
/// subtree is refused.
#[utoipa::path(patch, path = "/v1/categories/{id}", tag = "categories", request_body = CategoryPatch,
    params(("id" = Uuid, Path, description = "The category's id"),
           ("If-Match" = String, Header, description = "The ETag of the version you changed")),
    responses((status = 200, body = Category), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 412, body = Problem),
              (status = 422, body = Problem), (status = 428, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(patch): Json<CategoryPatch>,
) -> Result<Response, Error> {
    let expected = if_match(&headers)?;
    let mut fields = Fields::default();
    check(&mut fields, patch.name.as_deref(), patch.slug.as_deref());
    fields.into_result()?;
    let mut tx = state.db.begin().await?;
    // Moves are serialized: two concurrent moves could otherwise make a cycle together.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tienda-category-tree'))")
        .execute(&mut *tx)
        .await?;
    let current = load(&mut tx, id, true).await?;
    check_version(expected, current.version)?;
    if let Some(Some(parent)) = patch.parent_id {
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE below(id) AS (SELECT $1::uuid UNION \
             SELECT c.id FROM categories c JOIN below b ON c.parent_id = b.id) \
             SELECT EXISTS (SELECT 1 FROM below WHERE id = $2)",
        )
        .bind(id)
        .bind(parent)
        .fetch_one(&mut *tx)
        .await?;
        if cycle {
            return Err(Error::Conflict(
                "A category cannot move under itself or its own subtree.".into(),
            ));
        }
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE categories SET name = COALESCE($2, name), slug = COALESCE($3, slug), \
         parent_id = CASE WHEN $4 THEN $5 ELSE parent_id END, \
         version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(patch.name.as_deref().map(str::trim))
    .bind(&patch.slug)
    .bind(patch.parent_id.is_some())
    .bind(patch.parent_id.flatten())
    .fetch_one(&mut *tx)
    .await
    .map_err(taken_slug)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, category(&row)))
}

/// Deletes an empty category (admin; `If-Match` required): one with subcategories or products
/// is refused.
#[utoipa::path(delete, path = "/v1/categories/{id}", tag = "categories",
    params(("id" = Uuid, Path, description = "The category's id"),
           ("If-Match" = String, Header, description = "The ETag of the version you deleted")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 428, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    let expected = if_match(&headers)?;
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tienda-category-tree'))")
        .execute(&mut *tx)
        .await?;
    let current = load(&mut tx, id, true).await?;
    check_version(expected, current.version)?;
    let (children, products): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM categories WHERE parent_id = $1), \
                (SELECT count(*) FROM product_categories WHERE category_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if children > 0 || products > 0 {
        return Err(Error::Conflict(format!(
            "The category has {children} subcategories and {products} products; move them first."
        )));
    }
    sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_come_from_names() {
        assert_eq!(super::slugify("  Shoes & Boots! "), "shoes-boots");
        assert_eq!(super::slugify("Ünïcode Cafe"), "n-code-cafe");
    }
}
