//! The products service's errors and how clients see them.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tienda_events::inventory::Shortage;
use tienda_kit::{Problem, etag};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the fields say why.
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    /// No such thing (the detail says what).
    #[error("not found: {0}")]
    NotFound(String),
    /// The change clashes with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// `If-Match` is missing, malformed or names an older version.
    #[error(transparent)]
    Precondition(#[from] etag::Precondition),
    /// Not enough stock: nothing was reserved.
    #[error("insufficient stock")]
    Insufficient(Vec<Shortage>),
    /// The same id was used before with a different request.
    #[error("idempotency mismatch: {0}")]
    IdempotencyMismatch(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Collects field errors.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// Adds one.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    /// `Ok` when none were added.
    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self.0))
        }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(fields) => Problem::invalid_fields(fields),
            Error::NotFound(what) => Problem::not_found(what),
            Error::Conflict(detail) => Problem::conflict(detail),
            Error::Precondition(precondition) => precondition.into(),
            Error::Insufficient(shortages) => {
                let skus: Vec<&str> = shortages.iter().map(|s| s.sku.as_str()).collect();
                Problem::new(
                    StatusCode::CONFLICT,
                    "insufficient-stock",
                    "Insufficient stock",
                )
                .with_detail(format!(
                    "Not enough stock of {}; nothing was reserved.",
                    skus.join(", ")
                ))
                .with_extension(
                    "shortages",
                    serde_json::to_value(&shortages).expect("plain data"),
                )
            }
            Error::IdempotencyMismatch(detail) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-mismatch",
                "Reused id with a different request",
            )
            .with_detail(detail),
            Error::Database(err) => {
                tracing::error!(error = %err, "database error");
                Problem::internal()
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
