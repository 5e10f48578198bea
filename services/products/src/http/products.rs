//! `/v1/products`: search and list, read (cached), and the admin's create, update, delete.

use axum::{
    Extension,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use tienda_events::{
    Envelope,
    catalog::{ProductCreated, ProductDeleted, ProductStatus},
};
use tienda_kit::{
    Problem,
    etag::{self, IfMatch},
    json::Json,
    jwt::Claims,
    outbox,
};
use uuid::Uuid;

use super::AppState;
use crate::{
    SOURCE,
    cache::Entry,
    catalog::{self, NewProduct, Product, ProductPatch},
    error::Error,
    search::{self, ProductPage, SearchParams},
};

/// Searches and lists products.
#[utoipa::path(get, path = "/v1/products", tag = "products", params(SearchParams),
    responses((status = 200, body = ProductPage), (status = 403, body = Problem),
              (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ProductPage>, Problem> {
    let params = SearchParams::parse(&pairs)?;
    if params.status.as_deref().is_some_and(|s| s != "active") && !state.is_admin(&headers).await {
        return Err(
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail("Listing draft or archived products needs the admin role."),
        );
    }
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    Ok(Json(
        search::search(&mut conn, &params, &state.cache.facets).await?,
    ))
}

/// One product. Drafts are visible to admins only. Answers `304` to a matching
/// `If-None-Match`.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "The product's id")),
    responses((status = 200, body = Product, headers(("ETag" = String))), (status = 304),
              (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let entry = match state.cache.get(id).await {
        Some(entry) => entry,
        None => {
            let mut conn = state.db.acquire().await?;
            let product = catalog::get(&mut conn, id)
                .await?
                .ok_or_else(|| not_found(id))?;
            drop(conn);
            let entry = Entry {
                body: Bytes::from(serde_json::to_vec(&product).expect("plain data")),
                etag: etag::etag(product.version),
                draft: product.status == ProductStatus::Draft,
            };
            state.cache.put(id, entry.clone()).await;
            std::sync::Arc::new(entry)
        }
    };
    if entry.draft && !state.is_admin(&headers).await {
        return Err(not_found(id));
    }
    state.views.record(id);
    let mut response = if etag::none_match(&headers, &entry.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(entry.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        r
    };
    response.headers_mut().insert(
        header::ETAG,
        header::HeaderValue::from_str(&entry.etag).expect("quoted digits"),
    );
    Ok(response)
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound(format!("No product {id}."))
}

fn with_etag(status: StatusCode, product: Product) -> Response {
    etag::tagged(status, product.version, Json(product))
}

/// Creates a product (admin): `product.created`.
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body = NewProduct,
    responses((status = 201, body = Product, headers(("ETag" = String), ("Location" = String))),
              (status = 409, body = Problem, description = "A SKU belongs to another product"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Json(new): Json<NewProduct>,
) -> Result<Response, Error> {
    catalog::validate(&new)?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    catalog::insert(&mut tx, id, &new).await?;
    let event = ProductCreated {
        product_id: id,
        name: new.name.trim().to_owned(),
        status: new.status,
        variants: catalog::summaries(&new.variants),
    };
    outbox::enqueue(&mut tx, Envelope::new(SOURCE, event)).await?;
    let product = catalog::get(&mut tx, id).await?.expect("inserted above");
    tx.commit().await?;
    state.cache.facets.invalidate_all();
    let mut response = with_etag(StatusCode::CREATED, product);
    response.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&format!("/v1/products/{id}")).expect("ascii"),
    );
    Ok(response)
}

/// Changes a product (admin; `If-Match` required): `product.updated`.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", request_body = ProductPatch,
    params(("id" = Uuid, Path, description = "The product's id"),
           ("If-Match" = String, Header, description = "The ETag of the version you changed")),
    responses((status = 200, body = Product, headers(("ETag" = String))),
              (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 412, body = Problem), (status = 422, body = Problem),
              (status = 428, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(patch): Json<ProductPatch>,
) -> Result<Response, Error> {
    let expected = IfMatch::required(&headers)?;
    catalog::validate_patch(&patch)?;
    let mut tx = state.db.begin().await?;
    let current = catalog::lock(&mut tx, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    expected.check(current)?;
    catalog::update(&mut tx, id, &patch).await?;
    let product = catalog::announce_update(&mut tx, id).await?;
    tx.commit().await?;
    state.cache.invalidate(id).await;
    Ok(with_etag(StatusCode::OK, product))
}

/// Deletes a product (admin; `If-Match` required): it leaves listings, search and reads; its
/// SKUs stay for order history. `product.deleted`.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "The product's id"),
           ("If-Match" = String, Header, description = "The ETag of the version you deleted")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem),
              (status = 428, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    let expected = IfMatch::required(&headers)?;
    let mut tx = state.db.begin().await?;
    let current = catalog::lock(&mut tx, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    expected.check(current)?;
    catalog::soft_delete(&mut tx, id).await?;
    outbox::enqueue(
        &mut tx,
        Envelope::new(SOURCE, ProductDeleted { product_id: id }),
    )
    .await?;
    tx.commit().await?;
    state.cache.invalidate(id).await;
    Ok(StatusCode::NO_CONTENT)
}
