//! Categories: a tree. Products list in several categories; listing a category includes its
//! subtree. The shapes, the rules, and the SQL; every function takes the connection (or
//! transaction) it runs on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tienda_kit::constraint;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Fields};

/// A category.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
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

/// The slug a name gets when none is given: lower-case a-z 0-9 runs joined by `-`.
pub fn slugify(name: &str) -> String {
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

/// Checks a new category; its slug is [`slugify`]'s when it names none. Returns the slug.
pub fn validate(new: &NewCategory) -> Result<String, Error> {
    let slug = new.slug.clone().unwrap_or_else(|| slugify(&new.name));
    let mut fields = Fields::default();
    check(&mut fields, Some(&new.name), Some(&slug));
    fields.into_result()?;
    Ok(slug)
}

/// Checks the fields a patch changes.
pub fn validate_patch(patch: &CategoryPatch) -> Result<(), Error> {
    let mut fields = Fields::default();
    check(&mut fields, patch.name.as_deref(), patch.slug.as_deref());
    fields.into_result()
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

const COLUMNS: &str = "id, parent_id, name, slug, version, created_at, updated_at";

/// What a write's broken constraint means to the client.
fn violated(err: sqlx::Error) -> Error {
    constraint::translate(
        err,
        &[
            ("categories_slug_key", || {
                Error::Conflict("Another category has this slug; choose another.".into())
            }),
            ("categories_parent_id_fkey", || {
                Error::Invalid(vec![("parent_id".into(), "no such category".into())])
            }),
        ],
    )
}

/// The whole tree: parents before their children, siblings by name.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Category>, Error> {
    Ok(sqlx::query_as(
        "WITH RECURSIVE tree AS ( \
           SELECT c.*, ARRAY[c.name, c.id::text] AS path FROM categories c WHERE parent_id IS NULL \
           UNION ALL \
           SELECT c.*, t.path || ARRAY[c.name, c.id::text] FROM categories c JOIN tree t ON c.parent_id = t.id) \
         SELECT id, parent_id, name, slug, version, created_at, updated_at FROM tree ORDER BY path",
    )
    .fetch_all(conn)
    .await?)
}

/// One category.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Category>, Error> {
    select(conn, id, "").await
}

/// One category, locked for a change for the rest of the transaction. Changes to the tree's
/// shape are serialized first: two concurrent moves could otherwise make a cycle together.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Category>, Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tienda-category-tree'))")
        .execute(&mut *conn)
        .await?;
    select(conn, id, " FOR UPDATE").await
}

async fn select(
    conn: &mut PgConnection,
    id: Uuid,
    suffix: &str,
) -> Result<Option<Category>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM categories WHERE id = $1{suffix}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Inserts a category with the slug [`validate`] returned; a taken slug is a conflict, an
/// unknown parent invalid.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    new: &NewCategory,
    slug: &str,
) -> Result<Category, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO categories (id, parent_id, name, slug) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(new.parent_id)
    .bind(new.name.trim())
    .bind(slug)
    .fetch_one(conn)
    .await
    .map_err(violated)
}

/// Applies a patch to a category taken with [`lock`]. A move under itself or its own
/// subtree is a conflict; so is a taken slug.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    patch: &CategoryPatch,
) -> Result<Category, Error> {
    if let Some(Some(parent)) = patch.parent_id {
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE below(id) AS (SELECT $1::uuid UNION \
             SELECT c.id FROM categories c JOIN below b ON c.parent_id = b.id) \
             SELECT EXISTS (SELECT 1 FROM below WHERE id = $2)",
        )
        .bind(id)
        .bind(parent)
        .fetch_one(&mut *conn)
        .await?;
        if cycle {
            return Err(Error::Conflict(
                "A category cannot move under itself or its own subtree.".into(),
            ));
        }
    }
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE categories SET name = COALESCE($2, name), slug = COALESCE($3, slug), \
         parent_id = CASE WHEN $4 THEN $5 ELSE parent_id END, \
         version = version + 1, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(patch.name.as_deref().map(str::trim))
    .bind(&patch.slug)
    .bind(patch.parent_id.is_some())
    .bind(patch.parent_id.flatten())
    .fetch_one(conn)
    .await
    .map_err(violated)
}

/// Deletes a category taken with [`lock`]; one with subcategories or products is
/// refused (they would lose their place).
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    let (children, products): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM categories WHERE parent_id = $1), \
                (SELECT count(*) FROM product_categories WHERE category_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if children > 0 || products > 0 {
        return Err(Error::Conflict(format!(
            "The category has {children} subcategories and {products} products; move them first."
        )));
    }
    sqlx::query("DELETE FROM categories WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_come_from_names() {
        assert_eq!(super::slugify("  Shoes & Boots! "), "shoes-boots");
        assert_eq!(super::slugify("Ünïcode Cafe"), "n-code-cafe");
    }
}
