//! Bulk endpoints (admin): import, prices, stock counts, and the analytics report.

use axum::{
    Extension,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tienda_kit::{Problem, json::Json, jwt::Claims};
use tokio::io::AsyncBufReadExt;
use utoipa::ToSchema;

use super::AppState;
use crate::{
    analytics::{self, Analytics, Window},
    error::Error,
    import::{self, CsvHeader, ImportReport, PriceUpdates},
    inventory::{self, Adjustment},
};

/// Imports products (admin) from NDJSON (`application/x-ndjson`: one `POST /v1/products` body
/// per line) or CSV (`text/csv`: see the columns below), streamed. Upsert by SKU; each row
/// applies whole or not at all and has its own result.
///
/// CSV columns: `sku`, `name`, `price_amount`, `currency` (required), `description`, `status`,
/// `attributes` (`color=red;size=M`), `category_ids` and `images` (`;`-separated), `on_hand`.
#[utoipa::path(post, path = "/v1/products/import", tag = "bulk",
    request_body(content = String, content_type = "application/x-ndjson",
                 description = "NDJSON or CSV (Content-Type text/csv)"),
    responses((status = 200, body = ImportReport), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReport>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let csv = match content_type.as_str() {
        "text/csv" => true,
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => false,
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail(format!(
                "Send application/x-ndjson or text/csv, not {other:?}."
            )));
        }
    };
    let max = state.limits.import_max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let limited = http_body_util::Limited::new(body, max);
    let stream = http_body_util::BodyDataStream::new(limited)
        .map_err(|e| std::io::Error::other(e.to_string()));
    let reader = tokio_util::io::StreamReader::new(stream);

    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let mut report = ImportReport::new();
    let max_rows = state.limits.import_max_rows;
    let mut rows = 0usize;
    // A read error ends the import with a last result saying why (the rows before it stay).
    let mut stopped: Option<(usize, String)> = None;
    if csv {
        let mut records = csv_async::AsyncReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .create_reader(reader)
            .into_records();
        let header = match records.next().await {
            Some(Ok(record)) => CsvHeader::parse(&record)?,
            Some(Err(e)) => return Err(read_error(&e.to_string(), max)),
            None => {
                return Err(Problem::validation(
                    "The CSV is empty; it needs a header line.",
                ));
            }
        };
        let mut line = 1;
        while let Some(record) = records.next().await {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    stopped = Some((line + 1, e.to_string()));
                    break;
                }
            };
            line = record.position().map_or(line + 1, |p| p.line() as usize);
            rows += 1;
            if rows > max_rows {
                stopped = Some((
                    line,
                    format!("more than {max_rows} rows; the rest was not read"),
                ));
                break;
            }
            let outcome = match header.row(&record) {
                Ok(row) => import::apply(&mut conn, &row, &admin.sub)
                    .await
                    .map(|(k, id)| (k, Some(id))),
                Err(e) => Err(e),
            };
            report.push(line, outcome);
        }
    } else {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let mut line = 0;
        loop {
            let text = match lines.next_line().await {
                Ok(Some(text)) => text,
                Ok(None) => break,
                Err(e) => {
                    stopped = Some((line + 1, e.to_string()));
                    break;
                }
            };
            line += 1;
            if text.trim().is_empty() {
                continue;
            }
            rows += 1;
            if rows > max_rows {
                stopped = Some((
                    line,
                    format!("more than {max_rows} rows; the rest was not read"),
                ));
                break;
            }
            let outcome = match import::parse_json_line(&text) {
                Ok(row) => import::apply(&mut conn, &row, &admin.sub)
                    .await
                    .map(|(k, id)| (k, Some(id))),
                Err(e) => Err(e),
            };
            report.push(line, outcome);
        }
    }
    // A large load leaves the planner's statistics stale until autovacuum gets to them, and
    // search plans go bad meanwhile: refresh them now.
    if report.created + report.updated >= 1000
        && let Err(e) = sqlx::query("ANALYZE products, variants, inventory, product_categories")
            .execute(&mut *conn)
            .await
    {
        tracing::warn!(error = %e, "ANALYZE after the import failed");
    }
    if let Some((line, message)) = stopped {
        let message = if message.contains("length limit") {
            format!("the body is larger than {max} bytes; the rest was not read")
        } else {
            message
        };
        report.push(line, Err(Error::Invalid(vec![(String::new(), message)])));
    }
    Ok(Json(report))
}

fn too_large(max: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "Import too large",
    )
    .with_detail(format!("Imports take at most {max} bytes; split the file."))
}

fn read_error(message: &str, max: usize) -> Problem {
    if message.contains("length limit") {
        too_large(max)
    } else {
        Problem::bad_request(format!("Reading the import failed: {message}"))
    }
}

/// Sets prices of many SKUs (admin); each applies or fails alone.
#[utoipa::path(post, path = "/v1/products/prices", tag = "bulk", request_body = PriceUpdates,
    responses((status = 200, body = ImportReport, description = "`line` is the item's 1-based index"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn prices(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    Json(updates): Json<PriceUpdates>,
) -> Result<Json<ImportReport>, Error> {
    check_items(updates.items.len())?;
    let mut conn = state.db.acquire().await?;
    let mut report = ImportReport::new();
    for (i, update) in updates.items.iter().enumerate() {
        report.push(
            i + 1,
            import::set_price(&mut conn, update)
                .await
                .map(|(k, id)| (k, Some(id))),
        );
    }
    Ok(Json(report))
}

/// `POST /v1/inventory/adjustments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustments {
    /// 1-1000 counts.
    pub items: Vec<SkuAdjustment>,
}

/// One SKU's count.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuAdjustment {
    /// Stock keeping unit.
    pub sku: String,
    /// The counted on-hand stock.
    pub on_hand: i64,
    /// Why.
    pub reason: String,
}

fn check_items(n: usize) -> Result<(), Error> {
    if (1..=1000).contains(&n) {
        Ok(())
    } else {
        Err(Error::Invalid(vec![(
            "items".into(),
            "must hold 1 to 1000 items".into(),
        )]))
    }
}

/// Sets on-hand stock of many SKUs after a count (admin); each applies or fails alone.
#[utoipa::path(post, path = "/v1/inventory/adjustments", tag = "bulk", request_body = Adjustments,
    responses((status = 200, body = ImportReport, description = "`line` is the item's 1-based index"),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn adjustments(
    State(state): State<AppState>,
    Extension(admin): Extension<Claims>,
    Json(body): Json<Adjustments>,
) -> Result<Json<ImportReport>, Error> {
    check_items(body.items.len())?;
    let mut conn = state.db.acquire().await?;
    let mut report = ImportReport::new();
    for (i, item) in body.items.iter().enumerate() {
        let adjustment = Adjustment {
            on_hand: item.on_hand,
            reason: item.reason.clone(),
            low_stock_threshold: None,
        };
        let outcome = inventory::adjust(&mut conn, &item.sku, &adjustment, &admin.sub)
            .await
            .map(|_| ("updated", None));
        report.push(i + 1, outcome);
    }
    Ok(Json(report))
}

/// Most viewed products and best sellers over the last days (admin).
#[utoipa::path(get, path = "/v1/products/analytics", tag = "bulk", params(Window),
    responses((status = 200, body = Analytics), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn analytics(
    State(state): State<AppState>,
    Extension(_admin): Extension<Claims>,
    window: Result<Query<Window>, QueryRejection>,
) -> Result<Json<Analytics>, Problem> {
    let Query(window) = window.map_err(|e| Problem::validation(e.body_text()))?;
    state
        .views
        .flush(&state.db)
        .await
        .map_err(Error::Database)?;
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    Ok(Json(analytics::report(&mut conn, &window).await?))
}
