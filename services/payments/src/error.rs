//! The payments service's errors and how clients see them.

use axum::response::{IntoResponse, Response};
use tienda_kit::Problem;

/// What can go wrong on the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the fields say why.
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    /// No such thing (the detail says what).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request clashes with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A provider could not be reached; the same request may work later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(fields) => Problem::invalid_fields(fields),
            Error::NotFound(what) => Problem::not_found(what),
            Error::Conflict(detail) => Problem::conflict(detail),
            Error::Unavailable(detail) => Problem::unavailable(detail),
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
