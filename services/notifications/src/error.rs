//! The notifications service's errors and how clients see them.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tienda_kit::Problem;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the fields say why.
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    /// An unsubscribe token that this service did not sign.
    #[error("invalid unsubscribe token")]
    BadToken,
    /// The token's subject is not a user id.
    #[error("the signed-in subject is not a user id")]
    NotAUser,
    /// Nothing there (the sentence says what).
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing is not in a state that allows it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many requests of one kind; try again after this long.
    #[error("too many: {1}")]
    TooMany(std::time::Duration, String),
    /// A callback whose signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(fields) => Problem::invalid_fields(fields),
            Error::BadToken => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-unsubscribe-token",
                "Invalid unsubscribe link",
            )
            .with_detail("This unsubscribe link is damaged or was not issued by this shop."),
            Error::NotAUser => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail("Preferences belong to user accounts."),
            Error::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(detail)
            }
            Error::Conflict(detail) => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(detail)
            }
            Error::BadSignature(detail) => Problem::bad_request(detail),
            Error::TooMany(wait, detail) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests",
            )
            .with_detail(detail)
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait.as_secs().max(1)),
            ),
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
