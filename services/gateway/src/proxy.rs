//! The reverse proxy: which service a path belongs to, which endpoint of it takes the request
//! (power of two choices on in-flight requests), and what crosses: bodies streamed both ways,
//! hop-by-hop headers dropped, `X-Forwarded-*` and `X-Request-Id` set, `traceparent`
//! continued, the verified identity forwarded in headers clients cannot forge.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tienda_kit::{Problem, jwt::Verifier, trace_context::TraceContext};

/// The verified user's id, set by the gateway only.
pub const USER_ID: HeaderName = HeaderName::from_static("x-tienda-user-id");
/// The verified user's roles (comma-separated), set by the gateway only.
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-tienda-user-roles");

/// The services behind the gateway.
pub const SERVICES: [&str; 5] = ["auth", "products", "orders", "payments", "notifications"];

/// The service a path belongs to.
pub fn route(path: &str) -> Option<&'static str> {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    };
    if under("/v1/auth") || path == "/.well-known/jwks.json" {
        Some("auth")
    } else if under("/v1/products") || under("/v1/categories") || under("/v1/inventory") {
        Some("products")
    } else if under("/v1/orders") || under("/v1/cart") {
        Some("orders")
    } else if under("/v1/payments") || under("/v1/webhooks") {
        Some("payments")
    } else if under("/v1/notifications") {
        Some("notifications")
    } else {
        None
    }
}

/// One endpoint of a service.
#[derive(Debug)]
pub struct Endpoint {
    /// `http://host:port`.
    pub base: String,
    in_flight: AtomicUsize,
}

/// The endpoints of every service.
#[derive(Debug, Default)]
pub struct Upstreams {
    services: BTreeMap<String, Vec<Endpoint>>,
    tick: AtomicU64,
}

impl Upstreams {
    /// Parses `component=url[|url...]` pairs separated by commas.
    pub fn parse(table: &str) -> anyhow::Result<Self> {
        let mut services = BTreeMap::new();
        for pair in table.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, urls) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("GATEWAY_UPSTREAMS: {pair:?} is not component=url")
            })?;
            if !SERVICES.contains(&name) {
                anyhow::bail!(
                    "GATEWAY_UPSTREAMS: {name:?} is not a service ({})",
                    SERVICES.join(", ")
                );
            }
            let endpoints = urls
                .split('|')
                .map(|u| {
                    let base = u.trim().trim_end_matches('/').to_owned();
                    anyhow::ensure!(
                        base.starts_with("http://"),
                        "GATEWAY_UPSTREAMS: {base:?} must be an http:// URL"
                    );
                    Ok(Endpoint {
                        base,
                        in_flight: AtomicUsize::new(0),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            services.insert(name.to_owned(), endpoints);
        }
        Ok(Self {
            services,
            tick: AtomicU64::new(0),
        })
    }

    /// Picks an endpoint of `service`: of two (rotating) candidates, the one with fewer
    /// requests in flight.
    fn pick(&self, service: &str) -> Option<&Endpoint> {
        let endpoints = self.services.get(service)?;
        match endpoints.len() {
            0 => None,
            1 => endpoints.first(),
            n => {
                let t = self.tick.fetch_add(1, Ordering::Relaxed) as usize;
                let (a, b) = (&endpoints[t % n], &endpoints[(t + 1) % n]);
                let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }
}

/// What the proxy handler shares.
#[derive(Clone, Debug)]
pub struct Proxy {
    /// The upstream table.
    pub upstreams: Arc<Upstreams>,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// The HTTP client (pooled connections).
    pub client: Client<HttpConnector, Body>,
    /// Longest wait for an upstream's answer to start.
    pub timeout: Duration,
}

impl Proxy {
    /// A proxy over `upstreams`.
    pub fn new(upstreams: Upstreams, verifier: Verifier, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            upstreams: Arc::new(upstreams),
            verifier,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector),
            timeout,
        }
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Drops hop-by-hop headers, and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: String) -> Response {
    Problem::new(status, slug, title)
        .with_detail(detail)
        .into_response()
}

/// Forwards a request to the service its path belongs to.
pub async fn forward(
    State(proxy): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let Some(service) = route(&path) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("No service answers {path}; see /openapi.json of each service."),
        );
    };
    let Some(endpoint) = proxy.upstreams.pick(service) else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            "Service unavailable",
            format!("The {service} service is not running here."),
        );
    };

    let headers = request.headers_mut();
    // Identity comes from a verified token only.
    headers.remove(&USER_ID);
    headers.remove(&USER_ROLES);
    let has_token = headers.contains_key(header::AUTHORIZATION);
    if has_token {
        match proxy.verifier.verify_headers(headers).await {
            Ok(claims) => {
                if let Ok(v) = HeaderValue::from_str(&claims.sub) {
                    headers.insert(USER_ID, v);
                }
                if let Ok(v) = HeaderValue::from_str(&claims.roles.join(",")) {
                    headers.insert(USER_ROLES, v);
                }
            }
            Err(error) => {
                tracing::info!(%error, "token refused at the gateway");
                let mut response = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Unauthorized",
                    "The access token is invalid or expired; sign in again or refresh it.".into(),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
    }
    strip_hop_by_hop(headers);
    let host = headers.get(header::HOST).cloned();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    if let Some(context) = TraceContext::current()
        && let Ok(v) = HeaderValue::from_str(&context.child().to_header())
    {
        headers.insert(tienda_kit::trace_context::HEADER, v);
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri: Uri = match format!("{}{path_and_query}", endpoint.base).parse() {
        Ok(uri) => uri,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "The request is malformed",
                format!("The path cannot be forwarded: {e}"),
            );
        }
    };
    *request.uri_mut() = uri;
    request.headers_mut().remove(header::HOST);

    endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
    let answer = tokio::time::timeout(proxy.timeout, proxy.client.request(request)).await;
    endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    match answer {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            tracing::warn!(service, endpoint = %endpoint.base, error = %error, "upstream failed");
            problem(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "Bad gateway",
                format!("The {service} service did not answer; retry shortly."),
            )
        }
        Err(_) => problem(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            "Gateway timeout",
            format!(
                "The {service} service did not answer within {} s.",
                proxy.timeout.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_their_services() {
        for (path, service) in [
            ("/v1/auth/login", Some("auth")),
            ("/.well-known/jwks.json", Some("auth")),
            ("/v1/products", Some("products")),
            ("/v1/products/123", Some("products")),
            ("/v1/categories", Some("products")),
            ("/v1/inventory/SKU-1", Some("products")),
            ("/v1/cart", Some("orders")),
            ("/v1/orders/1", Some("orders")),
            ("/v1/webhooks/stripe", Some("payments")),
            ("/v1/notifications", Some("notifications")),
            ("/v1/productsx", None),
            ("/v2/products", None),
        ] {
            assert_eq!(route(path), service, "{path}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn the_upstream_table_is_checked() {
        assert!(Upstreams::parse("auth=http://a:1,products=http://b:1|http://c:1").is_ok());
        assert!(Upstreams::parse("shop=http://a:1").is_err());
        assert!(Upstreams::parse("auth=https://a:1").is_err());
        assert!(Upstreams::parse("auth").is_err());
    }
}
