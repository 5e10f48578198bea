//! Invoices and credit notes: an invoice is issued when a payment is captured, a credit note
//! when part of it is refunded, in the same transaction as the capture or refund.
//!
//! # Numbers
//! `INV-2026-000042`, `CN-2026-000007`: one series per kind, shop and calendar year (UTC),
//! gap-free and in the order of issue. The number comes from a counter row
//! (`invoice_counters`) incremented in the issuing transaction: concurrent captures queue on
//! the row's lock, and a transaction that does not commit (a crash, a lost commit, a provider
//! failure after the increment) takes its increment with it, so no number is skipped. A
//! PostgreSQL sequence would not do: a rolled-back `nextval` leaves a gap.
//!
//! # Amounts
//! Prices are taxes included. Each line's tax is split out at the shop's rate
//! (`INVOICE_TAX_RATE_BPS`, basis points: 2100 is 21 %), rounding half up; totals are sums of
//! lines, so the total is always what was captured. When the order's lines do not add up to
//! the captured amount (a partial capture), the invoice has one line for the amount.

pub mod render;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, types::Json};
use tienda_events::{money::Currency, payment::InvoiceDetails};
use uuid::Uuid;

use crate::db::payments::Payment;

/// Who issues the invoices: printed at the top of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Party {
    /// Name.
    pub name: String,
    /// Postal address, one entry per line.
    pub address: Vec<String>,
    /// Country (ISO 3166-1 alpha-2), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// VAT or tax number, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// Email, for customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// How this shop invoices.
#[derive(Debug, Clone)]
pub struct Invoicing {
    /// The shop (numbers are per shop).
    pub shop: String,
    /// The seller's details.
    pub seller: Party,
    /// The tax included in prices, in basis points.
    pub tax_rate_bps: u32,
}

/// An invoice or a credit note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Issued on capture.
    Invoice,
    /// Issued on refund.
    CreditNote,
}

impl Kind {
    /// The number's prefix and the series' name.
    pub fn series(self) -> &'static str {
        match self {
            Kind::Invoice => "INV",
            Kind::CreditNote => "CN",
        }
    }

    /// As printed.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Invoice => "Invoice",
            Kind::CreditNote => "Credit note",
        }
    }
}

/// One line, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// The variant, when the line is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// What it is.
    pub description: String,
    /// Units.
    pub quantity: i64,
    /// One unit, taxes included.
    pub unit_price: i64,
    /// The line before tax.
    pub net: i64,
    /// The tax in it.
    pub tax: i64,
    /// `quantity × unit_price`.
    pub total: i64,
}

/// Splits a tax-inclusive `gross` at `bps` into (net, tax), rounding the net half up.
pub fn split(gross: i64, bps: u32) -> (i64, i64) {
    if bps == 0 {
        return (gross, 0);
    }
    let gross = i128::from(gross);
    let denominator = 10_000 + i128::from(bps);
    let net = (gross * 10_000 * 2 + denominator) / (denominator * 2);
    let net = i64::try_from(net).expect("no larger than the gross");
    (net, i64::try_from(gross).expect("an i64") - net)
}

/// A line of `quantity` × `unit_price` with its tax split out.
pub fn line(
    sku: Option<String>,
    description: String,
    quantity: i64,
    unit_price: i64,
    bps: u32,
) -> Line {
    let total = quantity.saturating_mul(unit_price);
    let (net, tax) = split(total, bps);
    Line {
        sku,
        description,
        quantity,
        unit_price,
        net,
        tax,
        total,
    }
}

/// The lines of the invoice for capturing `captured` of `payment`: the order's lines when
/// they add up to it in the payment's currency, else one line for the amount.
pub fn capture_lines(
    payment: &Payment,
    captured: i64,
    details: Option<&InvoiceDetails>,
    bps: u32,
) -> Vec<Line> {
    if let Some(details) = details {
        let same_currency = details
            .lines
            .iter()
            .all(|l| l.unit_price.currency == payment.currency);
        let sum = details.lines.iter().try_fold(0_i64, |sum, l| {
            sum.checked_add(i64::from(l.quantity).checked_mul(l.unit_price.amount)?)
        });
        if same_currency && !details.lines.is_empty() && sum == Some(captured) {
            return details
                .lines
                .iter()
                .map(|l| {
                    line(
                        Some(l.sku.clone()),
                        l.description.clone(),
                        i64::from(l.quantity),
                        l.unit_price.amount,
                        bps,
                    )
                })
                .collect();
        }
    }
    vec![line(
        None,
        format!("Order {}", payment.order_id),
        1,
        captured,
        bps,
    )]
}

/// `INV-2026-000042`.
pub fn number(kind: Kind, year: i32, seq: i32) -> String {
    format!("{}-{year}-{seq:06}", kind.series())
}

/// An invoice or credit note as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invoice {
    /// Id.
    pub id: Uuid,
    /// `INV-2026-000042`.
    pub number: String,
    /// Invoice or credit note.
    pub kind: String,
    /// The shop.
    pub shop: String,
    /// Calendar year of the series.
    pub year: i32,
    /// Position in the series.
    pub seq: i32,
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The customer (guests: none).
    pub customer_id: Option<Uuid>,
    /// The refund a credit note is for.
    pub refund_id: Option<Uuid>,
    /// The invoice a credit note corrects.
    pub credits_invoice_id: Option<Uuid>,
    /// Its number.
    pub credits_number: Option<String>,
    /// ISO 4217.
    #[sqlx(try_from = "String")]
    pub currency: Currency,
    /// Before tax.
    pub net: i64,
    /// Tax.
    pub tax: i64,
    /// Taxes included.
    pub total: i64,
    /// The rate used, in basis points.
    pub tax_rate_bps: i32,
    /// Lines.
    pub lines: Json<Vec<Line>>,
    /// Billed to.
    pub customer: Json<Party>,
    /// Issued by.
    pub seller: Json<Party>,
    /// When.
    pub issued_at: DateTime<Utc>,
}

impl Invoice {
    /// Invoice or credit note.
    pub fn kind(&self) -> Kind {
        if self.kind == "credit_note" {
            Kind::CreditNote
        } else {
            Kind::Invoice
        }
    }
}

/// What a new invoice needs.
struct NewInvoice<'a> {
    kind: Kind,
    payment: &'a Payment,
    refund_id: Option<Uuid>,
    credits: Option<(Uuid, String)>,
    lines: Vec<Line>,
    customer: Party,
}

/// Takes the next number of `kind`'s series for this shop and year, in the caller's
/// transaction (which holds the counter's row lock until it ends).
async fn next_seq(
    conn: &mut PgConnection,
    shop: &str,
    kind: Kind,
    year: i32,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO invoice_counters (shop, series, year, last) VALUES ($1, $2, $3, 1) \
         ON CONFLICT (shop, series, year) DO UPDATE SET last = invoice_counters.last + 1 \
         RETURNING last",
    )
    .bind(shop)
    .bind(kind.series())
    .bind(year)
    .fetch_one(conn)
    .await
}

async fn insert(
    conn: &mut PgConnection,
    invoicing: &Invoicing,
    new: NewInvoice<'_>,
) -> Result<Invoice, sqlx::Error> {
    let now = Utc::now();
    let year = now.year();
    let seq = next_seq(conn, &invoicing.shop, new.kind, year).await?;
    let net = new.lines.iter().map(|l| l.net).sum::<i64>();
    let tax = new.lines.iter().map(|l| l.tax).sum::<i64>();
    let total = new.lines.iter().map(|l| l.total).sum::<i64>();
    sqlx::query_as(
        "INSERT INTO invoices (id, number, kind, shop, year, seq, payment_id, order_id, \
                customer_id, refund_id, credits_invoice_id, credits_number, currency, net, tax, \
                total, tax_rate_bps, lines, customer, seller, issued_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21) RETURNING *",
    )
    .bind(Uuid::now_v7())
    .bind(number(new.kind, year, seq))
    .bind(match new.kind {
        Kind::Invoice => "invoice",
        Kind::CreditNote => "credit_note",
    })
    .bind(&invoicing.shop)
    .bind(year)
    .bind(seq)
    .bind(new.payment.id)
    .bind(new.payment.order_id)
    .bind(new.payment.customer_id)
    .bind(new.refund_id)
    .bind(new.credits.as_ref().map(|c| c.0))
    .bind(new.credits.as_ref().map(|c| c.1.clone()))
    .bind(new.payment.currency.as_str())
    .bind(net)
    .bind(tax)
    .bind(total)
    .bind(i32::try_from(invoicing.tax_rate_bps).unwrap_or(i32::MAX))
    .bind(Json(&new.lines))
    .bind(Json(&new.customer))
    .bind(Json(&invoicing.seller))
    .bind(now)
    .fetch_one(conn)
    .await
}

/// The invoice of `payment`'s capture, if one was issued.
pub async fn of_payment(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Option<Invoice>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM invoices WHERE payment_id = $1 AND kind = 'invoice'")
        .bind(payment_id)
        .fetch_optional(conn)
        .await
}

/// Issues the invoice for capturing `captured` of `payment` (once per payment).
pub async fn issue_for_capture(
    conn: &mut PgConnection,
    invoicing: &Invoicing,
    payment: &Payment,
    captured: i64,
    details: Option<&InvoiceDetails>,
) -> Result<Invoice, sqlx::Error> {
    if let Some(issued) = of_payment(conn, payment.id).await? {
        return Ok(issued);
    }
    let customer = match details {
        Some(d) => Party {
            name: d.customer_name.clone(),
            address: d.address.clone(),
            country: Some(d.country.clone()),
            tax_id: None,
            email: Some(payment.email.clone()),
        },
        None => Party {
            name: payment.email.clone(),
            address: Vec::new(),
            country: None,
            tax_id: None,
            email: Some(payment.email.clone()),
        },
    };
    let lines = capture_lines(payment, captured, details, invoicing.tax_rate_bps);
    let new = NewInvoice {
        kind: Kind::Invoice,
        payment,
        refund_id: None,
        credits: None,
        lines,
        customer,
    };
    insert(conn, invoicing, new).await
}

/// Issues the credit note for refund `refund_id` of `amount` (once per refund), correcting
/// the payment's invoice.
pub async fn issue_for_refund(
    conn: &mut PgConnection,
    invoicing: &Invoicing,
    payment: &Payment,
    refund_id: Uuid,
    amount: i64,
    reason: &str,
) -> Result<Invoice, sqlx::Error> {
    let existing: Option<Invoice> = sqlx::query_as("SELECT * FROM invoices WHERE refund_id = $1")
        .bind(refund_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(issued) = existing {
        return Ok(issued);
    }
    let invoice = of_payment(conn, payment.id).await?;
    let customer = invoice.as_ref().map_or_else(
        || Party {
            name: payment.email.clone(),
            address: Vec::new(),
            country: None,
            tax_id: None,
            email: Some(payment.email.clone()),
        },
        |i| i.customer.0.clone(),
    );
    let description = match &invoice {
        Some(i) => format!("Refund against {}: {reason}", i.number),
        None => format!("Refund for order {}: {reason}", payment.order_id),
    };
    let new = NewInvoice {
        kind: Kind::CreditNote,
        payment,
        refund_id: Some(refund_id),
        credits: invoice.as_ref().map(|i| (i.id, i.number.clone())),
        lines: vec![line(None, description, 1, amount, invoicing.tax_rate_bps)],
        customer,
    };
    insert(conn, invoicing, new).await
}

/// Invoices and credit notes, newest first: of `order_id` when given, of `customer_id` when
/// given (both: both must match), at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    order_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Invoice>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM invoices \
         WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR customer_id = $2) \
         ORDER BY issued_at DESC, id DESC LIMIT $3",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One invoice or credit note.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Invoice>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM invoices WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxes_are_split_out_of_inclusive_prices_and_add_back_up() {
        assert_eq!(split(12_100, 2_100), (10_000, 2_100));
        assert_eq!(split(1_000, 0), (1_000, 0));
        // 9.99 at 21 %: net 8.2562 → 8.26, half up.
        assert_eq!(split(999, 2_100), (826, 173));
        // 1 cent at 21 %: net 0.826 → 1 cent, no tax.
        assert_eq!(split(1, 2_100), (1, 0));
        for gross in [0, 1, 2, 99, 100, 12_345, 999_999_999] {
            for bps in [0, 400, 1_000, 2_100, 2_500] {
                let (net, tax) = split(gross, bps);
                assert_eq!(net + tax, gross, "{gross} at {bps}");
                assert!(tax >= 0 && net >= 0);
            }
        }
    }

    #[test]
    fn numbers_are_zero_padded_per_series_and_year() {
        assert_eq!(number(Kind::Invoice, 2026, 42), "INV-2026-000042");
        assert_eq!(number(Kind::CreditNote, 2027, 1), "CN-2027-000001");
    }
}
