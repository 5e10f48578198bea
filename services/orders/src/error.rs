//! The orders service's errors and how clients see them.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tienda_kit::Problem;

use crate::domain::status::IllegalTransition;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the fields say why.
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    /// No such thing (the detail says what).
    #[error("not found: {0}")]
    NotFound(String),
    /// The order's state does not allow it.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The caller's token is not a customer's.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A service this one needs did not answer usefully (products, for prices).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The stored data does not allow it (the detail says why).
    #[error("conflict: {0}")]
    Conflict(String),
    /// No cart can be found without a token or sign-in (the detail says what to send).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Prices changed since the customer saw them: nothing was done until they confirm.
    #[error("prices changed")]
    PriceChanged(Vec<crate::http::cart::PriceChange>),
    /// Fewer units can be reserved than asked.
    #[error("insufficient stock of {sku}")]
    InsufficientStock {
        /// The SKU.
        sku: String,
        /// Units that can be reserved now.
        available: i64,
    },
    /// The caller holds too much at once (the detail says what to do).
    #[error("too many: {0}")]
    TooManyRequests(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(fields) => Problem::invalid_fields(fields),
            Error::NotFound(what) => Problem::not_found(what),
            Error::Illegal(illegal) => Problem::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "Not possible in the order's state",
            )
            .with_detail(format!("{}.", capitalized(&illegal.to_string())))
            .with_extension("status", serde_json::json!(illegal.from)),
            Error::Forbidden(detail) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
            }
            Error::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                Problem::unavailable(detail)
            }
            Error::Conflict(detail) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(detail)
            }
            Error::Unauthorized(detail) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                    .with_detail(detail)
            }
            Error::PriceChanged(lines) => {
                let named: Vec<String> = lines
                    .iter()
                    .map(|l| format!("{} ({} → {})", l.name, l.seen, l.current))
                    .collect();
                Problem::new(
                    StatusCode::CONFLICT,
                    "price-changed",
                    "Prices changed since they were shown",
                )
                .with_detail(format!(
                    "The price changed for {}. Show the customer the new prices; once they \
                     accept, send PATCH /v1/cart {{\"accept_prices\": true}} and check out again.",
                    named.join(", ")
                ))
                .with_extension("lines", serde_json::json!(lines))
            }
            Error::InsufficientStock { sku, available } => Problem::new(
                StatusCode::CONFLICT,
                "insufficient-stock",
                "Not enough stock",
            )
            .with_detail(format!(
                "Only {available} units of {sku} can be ordered now; ask for fewer."
            ))
            .with_extension("sku", serde_json::json!(sku))
            .with_extension("available", serde_json::json!(available)),
            Error::TooManyRequests(detail) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            )
            .with_detail(detail),
            Error::Database(err) => {
                tracing::error!(error = %err, "database error");
                Problem::internal()
            }
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
