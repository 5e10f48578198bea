//! The auth service's errors and how clients see them.

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
    /// The email is registered already.
    #[error("email taken")]
    EmailTaken,
    /// Wrong email or password (never says which).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A refresh token that is unknown, expired, revoked — or reused (then its session is revoked).
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// Too many failed sign-ins for this account or client: locked until then.
    #[error("locked until {0}")]
    Locked(chrono::DateTime<chrono::Utc>),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else on our side.
    #[error("internal: {0}")]
    Internal(String),
}

/// `Result` with the auth error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(fields) => {
                let detail = fields
                    .iter()
                    .map(|(f, m)| format!("{f} {m}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                fields
                    .into_iter()
                    .fold(Problem::validation(detail), |p, (f, m)| p.with_field(f, m))
            }
            Error::EmailTaken => Problem::conflict(
                "An account with this email exists; sign in or reset the password.",
            ),
            Error::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            )
            .with_detail("The email or password is wrong."),
            Error::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
                "Invalid refresh token",
            )
            .with_detail("Sign in again."),
            Error::Locked(until) => {
                let seconds = (until - chrono::Utc::now()).num_seconds().max(1);
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked",
                    "Too many failed sign-ins",
                )
                .with_detail(format!(
                    "Sign-in is locked for {seconds} s after repeated failures."
                ))
                .with_header(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_str(&seconds.to_string()).expect("digits"),
                )
            }
            Error::Database(err) => {
                tracing::error!(error = %err, "database error");
                Problem::internal()
            }
            Error::Internal(err) => {
                tracing::error!(error = %err, "internal error");
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
