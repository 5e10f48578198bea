//! RFC 9457 problem details: every error a client sees is `application/problem+json` with a
//! stable `type`, a human `title`, the `status`, a `detail`, and for validation the list of
//! fields at fault. Internal details are logged, never sent.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where problem `type` URIs live; the last segment is the stable identifier.
pub const TYPE_BASE: &str = "https://tienda.dev/problems/";

/// The media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable URI identifying the kind of problem, e.g. `https://tienda.dev/problems/validation`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the kind of problem; the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields at fault, for validation problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Response headers to send with it (`Retry-After`, `Allow`, ...).
    #[serde(skip)]
    #[schema(ignore)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Members beyond the standard ones (RFC 9457 §3.2), e.g. `shortages` on a failed
    /// reservation.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(ignore)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

/// One field of the request that is at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `variants[0].price.amount`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// A problem of kind `slug` (the last segment of its `type` URI).
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{TYPE_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            headers: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// Adds the occurrence-specific explanation.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a field error.
    pub fn with_field(mut self, field: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 400: the request cannot be parsed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is malformed",
        )
        .with_detail(detail)
    }

    /// 422: the request parsed but its content is invalid; add fields with [`Self::with_field`].
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The request is invalid",
        )
        .with_detail(detail)
    }

    /// 422 naming each `(field, message)`; the detail lists them all.
    pub fn invalid_fields(fields: Vec<(String, String)>) -> Self {
        let detail = fields
            .iter()
            .map(|(f, m)| format!("{f} {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        fields
            .into_iter()
            .fold(Self::validation(detail), |p, (f, m)| p.with_field(f, m))
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(detail)
    }

    /// 500. The cause is logged with the request's id; the client gets nothing of it.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .with_detail("Something went wrong on our side; retry later or report the X-Request-Id.")
    }

    /// 503: a dependency is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
    }

    /// The status as a `StatusCode`.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let headers = self.headers.clone();
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}
