//! `/v1/invoices`: a customer's invoices and credit notes (an admin's: anyone's), as JSON,
//! HTML or PDF. Another customer's invoice is 404, as if it did not exist.

use axum::{
    Extension,
    extract::{Path, Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tienda_events::money::Money;
use tienda_kit::{Problem, json::Json, jwt::Claims};
use uuid::Uuid;

use super::AppState;
use crate::{
    error::Error,
    invoice::{self, Invoice, Kind, Line, Party, render},
};

/// An invoice or credit note.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceView {
    /// Id.
    pub id: Uuid,
    /// `INV-2026-000042` or `CN-2026-000007`: gap-free per series, shop and year.
    pub number: String,
    /// `invoice` (a capture) or `credit_note` (a refund).
    pub kind: Kind,
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The refund, for a credit note.
    pub refund_id: Option<Uuid>,
    /// The invoice a credit note corrects.
    pub credits: Option<String>,
    /// Lines, in minor units of the currency.
    pub lines: Vec<Line>,
    /// Before tax.
    pub net: Money,
    /// Tax.
    pub tax: Money,
    /// Taxes included (what was captured or refunded).
    pub total: Money,
    /// The tax rate, in basis points (2100: 21 %).
    pub tax_rate_bps: i32,
    /// Issued by.
    pub seller: Party,
    /// Billed to.
    pub customer: Party,
    /// When.
    pub issued_at: DateTime<Utc>,
    /// The PDF.
    pub pdf_url: String,
    /// The HTML page.
    pub html_url: String,
}

impl From<Invoice> for InvoiceView {
    fn from(i: Invoice) -> Self {
        let money = |amount| Money {
            amount,
            currency: i.currency,
        };
        Self {
            pdf_url: format!("/v1/invoices/{}.pdf", i.id),
            html_url: format!("/v1/invoices/{}.html", i.id),
            id: i.id,
            number: i.number.clone(),
            kind: i.kind(),
            payment_id: i.payment_id,
            order_id: i.order_id,
            refund_id: i.refund_id,
            credits: i.credits_number.clone(),
            net: money(i.net),
            tax: money(i.tax),
            total: money(i.total),
            tax_rate_bps: i.tax_rate_bps,
            lines: i.lines.0,
            seller: i.seller.0,
            customer: i.customer.0,
            issued_at: i.issued_at,
        }
    }
}

/// A list of invoices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoiceList {
    /// Newest first, at most 100.
    pub items: Vec<InvoiceView>,
}

/// The list's query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// Only this order's invoices.
    pub order_id: Option<Uuid>,
}

/// Whose invoices the caller may read: `None` for admins (anyone's).
fn owner_filter(claims: &Claims) -> Result<Option<Uuid>, Error> {
    if claims.has_role("admin") {
        return Ok(None);
    }
    claims
        .sub
        .parse()
        .map(Some)
        .map_err(|_| Error::NotFound("No invoices for this account.".into()))
}

/// Lists the caller's invoices and credit notes (admins: anyone's), newest first; with
/// `order_id`, that order's.
#[utoipa::path(get, path = "/v1/invoices", tag = "invoices", params(InvoiceQuery),
    responses((status = 200, body = InvoiceList), (status = 401, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<InvoiceList>, Error> {
    let mut order_id = None;
    let mut fields = Vec::new();
    for (name, value) in &pairs {
        match name.as_str() {
            "order_id" => match value.parse() {
                Ok(id) => order_id = Some(id),
                Err(_) => fields.push((name.clone(), "must be a UUID".to_owned())),
            },
            _ => fields.push((name.clone(), "is not a parameter of this list".to_owned())),
        }
    }
    if !fields.is_empty() {
        return Err(Error::Invalid(fields));
    }
    let owner = owner_filter(&claims)?;
    let mut conn = state.db.acquire().await?;
    let rows = invoice::list(&mut conn, order_id, owner, 100).await?;
    Ok(Json(InvoiceList {
        items: rows.into_iter().map(InvoiceView::from).collect(),
    }))
}

/// One invoice or credit note: `{id}` as JSON, `{id}.pdf` as a PDF, `{id}.html` as a page.
/// The owner's or an admin's; anyone else's is 404.
#[utoipa::path(get, path = "/v1/invoices/{file}", tag = "invoices",
    params(("file" = String, Path, description = "`{id}`, `{id}.pdf` or `{id}.html`")),
    responses((status = 200, body = InvoiceView, description = "JSON; `.pdf`: application/pdf; `.html`: text/html"),
              (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(claims): Extension<Claims>,
    Path(file): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Error::NotFound(format!("No invoice {file}."));
    let (id, format) = match file.rsplit_once('.') {
        Some((id, "pdf")) => (id, "pdf"),
        Some((id, "html")) => (id, "html"),
        Some(_) => return Err(not_found().into()),
        None => (file.as_str(), "json"),
    };
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let owner = owner_filter(&claims)?;
    let mut conn = state.db.acquire().await.map_err(Error::from)?;
    let invoice = invoice::get(&mut conn, id)
        .await
        .map_err(Error::from)?
        .filter(|i| owner.is_none() || i.customer_id == owner)
        .ok_or_else(not_found)?;
    let disposition = |ext: &str| {
        HeaderValue::from_str(&format!("inline; filename=\"{}.{ext}\"", invoice.number))
            .unwrap_or(HeaderValue::from_static("inline"))
    };
    Ok(match format {
        "pdf" => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/pdf"),
                ),
                (header::CONTENT_DISPOSITION, disposition("pdf")),
            ],
            render::pdf(&invoice),
        )
            .into_response(),
        "html" => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CONTENT_DISPOSITION, disposition("html")),
            ],
            render::html(&invoice),
        )
            .into_response(),
        _ => Json(InvoiceView::from(invoice)).into_response(),
    })
}
