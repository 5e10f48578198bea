//! `/v1/payments/reconciliations/{day}`: admins read a day's reconciliation of our ledger with
//! the providers' records, or run it again.

use axum::extract::{Path, State};
use chrono::NaiveDate;
use tienda_kit::{Problem, json::Json};

use super::AppState;
use crate::{error::Error, reconcile};

fn day(text: &str) -> Result<NaiveDate, Error> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Error::Invalid(vec![("day".into(), "must be a date, YYYY-MM-DD".into())]))
}

/// A day's reconciliation report (admin): every payment of that UTC day whose provider
/// disagrees with our ledger. 404 until the day was reconciled (the service does yesterday
/// once a day; `POST` does any day now).
#[utoipa::path(get, path = "/v1/payments/reconciliations/{day}", tag = "payments",
    params(("day" = String, Path, description = "The UTC day, YYYY-MM-DD")),
    responses((status = 200, body = reconcile::Report), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<reconcile::Report>, Error> {
    let day = day(&text)?;
    reconcile::report(&state.db, day)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("{day} has not been reconciled; POST to run it.")))
}

/// Reconciles a day now (admin), replacing its earlier report; answers the report.
#[utoipa::path(post, path = "/v1/payments/reconciliations/{day}", tag = "payments",
    params(("day" = String, Path, description = "The UTC day, YYYY-MM-DD")),
    responses((status = 200, body = reconcile::Report), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn run(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<reconcile::Report>, Error> {
    let day = day(&text)?;
    if day > chrono::Utc::now().date_naive() {
        return Err(Error::Invalid(vec![(
            "day".into(),
            "is in the future; nothing to reconcile yet".into(),
        )]));
    }
    Ok(Json(
        reconcile::run(&state.db, &state.providers, day).await?,
    ))
}
