//! `/v1/categories`: the tree, one category, and the admin's create, update, delete. The
//! shapes, rules and SQL live in [`crate::categories`].

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use tienda_kit::{
    Problem,
    etag::{self, IfMatch},
    json::Json,
    jwt::Claims,
};
use uuid::Uuid;

use super::AppState;
use crate::{
    categories::{self, Category, CategoryList, CategoryPatch, NewCategory},
    error::Error,
};

fn not_found(id: Uuid) -> Error {
    Error::NotFound(format!("No category {id}."))
}

/// The whole tree, parents first.
#[utoipa::path(get, path = "/v1/categories", tag = "categories",
    responses((status = 200, body = CategoryList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<CategoryList>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(CategoryList {
        items: categories::list(&mut conn).await?,
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
    let category = categories::get(&mut conn, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(etag::tagged(
        StatusCode::OK,
        category.version,
        Json(category),
    ))
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
    let slug = categories::validate(&new)?;
    let mut conn = state.db.acquire().await?;
    let category = categories::insert(&mut conn, Uuid::now_v7(), &new, &slug).await?;
    Ok(etag::tagged(
        StatusCode::CREATED,
        category.version,
        Json(category),
    ))
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
    let expected = IfMatch::required(&headers)?;
    categories::validate_patch(&patch)?;
    let mut tx = state.db.begin().await?;
    let current = categories::lock(&mut tx, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    expected.check(current.version)?;
    let category = categories::update(&mut tx, id, &patch).await?;
    tx.commit().await?;
    Ok(etag::tagged(
        StatusCode::OK,
        category.version,
        Json(category),
    ))
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
    let expected = IfMatch::required(&headers)?;
    let mut tx = state.db.begin().await?;
    let current = categories::lock(&mut tx, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    expected.check(current.version)?;
    categories::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
