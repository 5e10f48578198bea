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
    /// Too many failed sign-ins for this account from this client, or from this client
    /// across accounts: the next attempt is heard after this long.
    #[error("sign-in throttled for {0:?}")]
    Locked(std::time::Duration),
    /// Password hashing is at its memory budget: try again shortly.
    #[error("password hashing is busy")]
    Busy,
    /// No OIDC provider of that name is configured.
    #[error("unknown OIDC provider {0}")]
    UnknownProvider(String),
    /// An OIDC provider could not be reached or answered nonsense.
    #[error("OIDC provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// An OIDC sign-in was refused: the slug says at which step, the detail what to do.
    #[error("OIDC sign-in refused: {0}: {1}")]
    OidcRejected(&'static str, String),
    /// The provider did not vouch for the email, so it can neither link nor create an account.
    #[error("OIDC email not verified")]
    OidcEmailUnverified,
    /// The identity's address belongs to a staff account, which is never linked automatically.
    #[error("staff accounts are not linked automatically")]
    OidcLinkRefused,
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
            Error::Invalid(fields) => Problem::invalid_fields(fields),
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
            Error::Locked(wait) => {
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "locked",
                    "Too many failed sign-ins",
                )
                .with_detail(format!(
                    "After repeated failed sign-ins from this client, the next attempt is heard \
                     in {seconds} s. Forgot the password? Reset it with \
                     POST /v1/auth/password/reset."
                ))
                .with_header(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(seconds),
                )
            }
            Error::Busy => Problem::unavailable(
                "Too many sign-ins and registrations are being checked at once; try again in a \
                 second.",
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            ),
            Error::UnknownProvider(name) => Problem::not_found(format!(
                "No OIDC provider named {name:?} is configured (AUTH_OIDC_PROVIDERS)."
            )),
            Error::ProviderUnavailable(message) => {
                tracing::warn!(%message, "OIDC provider unavailable");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "oidc-provider-unavailable",
                    "The sign-in provider is unavailable",
                )
                .with_detail(format!(
                    "{message}. Try again later or sign in with a password."
                ))
            }
            Error::OidcRejected(slug, detail) => {
                Problem::new(StatusCode::UNAUTHORIZED, slug, "Sign-in refused").with_detail(detail)
            }
            Error::OidcEmailUnverified => Problem::new(
                StatusCode::FORBIDDEN,
                "oidc-email-unverified",
                "Email not verified by the provider",
            )
            .with_detail(
                "The provider did not verify this account's email address, so it can neither \
                 sign in to nor create a Tienda account. Verify the email with the provider, \
                 or register with a password.",
            ),
            Error::OidcLinkRefused => Problem::new(
                StatusCode::FORBIDDEN,
                "oidc-link-refused",
                "This address belongs to a staff account",
            )
            .with_detail(
                "Accounts with the admin or support role are never linked to a sign-in \
                 provider automatically, whatever the provider says about the address: sign \
                 in with the account's password.",
            ),
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
