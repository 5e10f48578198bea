//! What every answer from the edge carries: security headers (HSTS, no sniffing, no framing,
//! no referrer; a locked-down CSP on the gateway's own problem documents) and, for configured
//! origins, CORS.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, header},
    middleware,
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Adds the security headers and, when `origins` is not empty, CORS.
pub fn layers(router: Router, origins: &str) -> anyhow::Result<Router> {
    // One layer for all of them: each layer is a future around the next on every request.
    let router = router.layer(middleware::map_response(security_headers));
    let origins: Vec<&str> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(router);
    }
    let allow = if origins == ["*"] {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o).map_err(|_| {
                    anyhow::anyhow!(
                        "GATEWAY_CORS_ORIGINS: {o:?} is not an origin (e.g. https://shop.example)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("cart-token"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    Ok(router.layer(cors))
}

/// The headers every answer carries unless the service set its own.
const FIXED: [(HeaderName, HeaderValue); 4] = [
    (
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
];

/// Adds the fixed security headers a service did not set; problem documents are data, never a
/// page to render, so they also get a CSP that forbids everything.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in FIXED {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    let is_problem = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}
