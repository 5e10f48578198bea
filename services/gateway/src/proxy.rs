//! The reverse proxy: a request's way through the gateway.
//!
//! 1. route: which service the path belongs to (404 when none);
//! 2. identity: forged identity headers dropped; a bearer token verified locally (401);
//! 3. access rules: public, authenticated or a role (401/403);
//! 4. size: a declared body over the route's limit ([`BodyLimits`]) is refused (413), a
//!    streamed one is cut there;
//! 5. rate limits: every matching RateLimitPolicy rule counts the request (429);
//! 6. the service's CircuitPolicy: breaker and bulkhead (fallback), then attempts on
//!    endpoints picked by power of two choices, retried within budget, each outcome fed to
//!    outlier ejection and the breaker;
//! 7. the answer streamed back without hop-by-hop headers, with `RateLimit` headers.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::{Body, HttpBody},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tienda_kit::{
    Problem,
    jwt::Verifier,
    policy::{
        Policies, PolicySet,
        rate_limit::{self, Pass, RequestFacts},
    },
    resilience::{Admission, Circuit, Failure, may_retry},
    trace_context::{Kind, Span},
};

use crate::{
    access::{Access, AccessRules, TrustedProxies},
    body_limit::BodyLimits,
    metrics::GatewayMetrics,
    upstream::{Pool, Upstreams},
};

/// The verified user's id, set by the gateway only.
pub const USER_ID: HeaderName = HeaderName::from_static("x-tienda-user-id");
/// The verified user's roles (comma-separated), set by the gateway only.
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-tienda-user-roles");

/// The routes: path prefix → service.
const ROUTES: [(&str, &str); 12] = [
    ("/v1/auth", "auth"),
    ("/.well-known/jwks.json", "auth"),
    ("/v1/products", "products"),
    ("/v1/categories", "products"),
    ("/v1/inventory", "products"),
    ("/v1/orders", "orders"),
    ("/v1/cart", "orders"),
    ("/v1/checkout", "orders"),
    ("/v1/payments", "payments"),
    ("/v1/webhooks", "payments"),
    ("/v1/invoices", "payments"),
    ("/v1/notifications", "notifications"),
];

/// Every service the gateway routes to.
pub const UPSTREAMS: [&str; 5] = ["auth", "products", "orders", "payments", "notifications"];

/// The route a path belongs to: `(prefix, service)`.
pub fn route(path: &str) -> Option<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .find(|(prefix, _)| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .copied()
}

/// What the proxy handler shares.
#[derive(Clone, Debug)]
pub struct Proxy {
    /// The endpoints of each service.
    pub upstreams: Arc<Upstreams>,
    /// The policies in force.
    pub policies: Arc<Policies>,
    /// Checks access tokens.
    pub verifier: Verifier,
    /// Per-route access rules.
    pub access: Arc<AccessRules>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: Arc<TrustedProxies>,
    /// The HTTP clients (pooled connections): one per serving thread
    /// ([`tienda_kit::serve::serving_thread`]), so a connection's task runs on the thread
    /// whose requests use it.
    pub clients: Vec<Client<HttpConnector, Body>>,
    /// Deadline when no CircuitPolicy sets one.
    pub default_timeout: Duration,
    /// Largest request body per route.
    pub body_limits: Arc<BodyLimits>,
    /// Per-route and per-upstream metrics.
    pub metrics: GatewayMetrics,
}

impl Proxy {
    /// The client of the serving thread this runs on.
    fn client(&self) -> &Client<HttpConnector, Body> {
        let thread = tienda_kit::serve::serving_thread().unwrap_or(0);
        &self.clients[thread % self.clients.len()]
    }
}

/// An HTTP client for upstreams: pooled keep-alive HTTP/1.1 connections, or with `http2`
/// multiplexed HTTP/2 ones (cleartext, prior knowledge); no Nagle delay.
pub fn client(http2: bool) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256);
    if http2 {
        builder
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .timer(hyper_util::rt::TokioTimer::new());
    }
    builder.build(connector)
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

fn with_retry_after(mut response: Response, after: Duration) -> Response {
    let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn unauthorized(detail: &str) -> Response {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail.to_owned(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Forwards a request to the service its path belongs to.
pub async fn forward(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let Some((prefix, service)) = route(&path) else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("No service answers {path}; see /openapi.json of each service."),
        );
    };

    let headers = request.headers_mut();
    // Hop-by-hop headers go first, before the gateway sets its own: a client naming
    // `X-Tienda-User-Id` or `X-Real-IP` in `Connection` must not strip what the gateway adds.
    strip_hop_by_hop(headers);
    // Identity comes from a verified token only.
    headers.remove(&USER_ID);
    headers.remove(&USER_ROLES);
    let client_ip = proxy.trusted.client_ip(peer.ip(), headers).to_string();
    // Limits not keyed on the user count before the token is checked, so a flood of bad
    // tokens is limited like any other traffic.
    let policies = proxy.policies.current();
    let anonymous = RequestFacts {
        service,
        method: &method,
        path: &path,
        headers,
        client_ip: &client_ip,
        user: None,
    };
    let before_identity = match limit(&proxy, &policies, &anonymous, Pass::BeforeIdentity) {
        Ok(outcome) => outcome,
        Err(response) => {
            proxy
                .metrics
                .answered(prefix, service, StatusCode::TOO_MANY_REQUESTS, started);
            return response;
        }
    };
    let claims = if headers.contains_key(header::AUTHORIZATION) {
        match proxy.verifier.verify_headers(headers).await {
            Ok(claims) => Some(claims),
            Err(error) => {
                // 401, or 503 when auth's keys could not be fetched: the token may be fine.
                tracing::info!(%error, "token refused at the gateway");
                return tienda_kit::jwt::refusal(&error);
            }
        }
    } else {
        None
    };
    match (proxy.access.needs(&method, &path), &claims) {
        (Access::Public, _) => {}
        (_, None) => {
            return unauthorized(&format!(
                "{method} {path} needs a signed-in user: send a bearer token."
            ));
        }
        (Access::Authenticated, Some(_)) => {}
        (Access::Role(role), Some(c)) => {
            if !c.has_role(role) {
                return problem(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Forbidden",
                    format!("{method} {path} needs the {role} role."),
                );
            }
        }
    }
    if let Some(c) = &claims {
        if let Ok(v) = HeaderValue::from_str(&c.sub) {
            headers.insert(USER_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&c.roles.join(",")) {
            headers.insert(USER_ROLES, v);
        }
    }
    let max_body = proxy.body_limits.limit(&method, &path);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return refuse_declared_too_large(max_body);
    }

    let facts = RequestFacts {
        service,
        method: &method,
        path: &path,
        headers,
        client_ip: &client_ip,
        user: claims.as_ref().map(|c| c.sub.as_str()),
    };
    let tightest = match limit(&proxy, &policies, &facts, Pass::User) {
        Ok(outcome) => rate_limit::tighter(before_identity, outcome),
        Err(response) => {
            proxy
                .metrics
                .answered(prefix, service, StatusCode::TOO_MANY_REQUESTS, started);
            return response;
        }
    };

    let trusted_peer = proxy.trusted.trusts(peer.ip());
    forward_headers(request.headers_mut(), peer, trusted_peer, &client_ip);
    let circuit = policies.circuits.get(service).cloned();
    let Some(pool) = proxy
        .upstreams
        .pool(service)
        .filter(|p| !p.endpoints.is_empty())
    else {
        proxy
            .metrics
            .answered(prefix, service, StatusCode::SERVICE_UNAVAILABLE, started);
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream-unavailable",
            "Service unavailable",
            format!("The {service} service is not running here."),
        );
    };
    let (mut response, attempts) =
        call(&proxy, service, &pool, circuit.as_ref(), request, max_body).await;
    if let Some(outcome) = &tightest {
        rate_limit::headers(outcome, response.headers_mut());
    }
    proxy
        .metrics
        .answered(prefix, service, response.status(), started);
    let status = response.status().as_u16();
    tracing::info!(
        target: "tienda_gateway::access",
        method = %method,
        path,
        status,
        upstream = service,
        client_ip,
        user = claims.as_ref().map(|c| c.sub.as_str()),
        attempts,
        duration_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Counts the request by the rules of `pass`: `Ok` with the tightest allowed outcome (for the
/// `RateLimit` headers), or `Err` with the 429 answer.
fn limit(
    proxy: &Proxy,
    policies: &PolicySet,
    facts: &RequestFacts<'_>,
    pass: Pass,
) -> Result<Option<rate_limit::Outcome>, Response> {
    let (verdict, shadowed) = rate_limit::evaluate(&policies.limits, facts, pass);
    for s in &shadowed {
        proxy
            .metrics
            .rate_limited(&s.limit.policy, &s.limit.rule.name, true);
    }
    let refused = match verdict {
        Ok(tightest) => return Ok(tightest),
        Err(refused) => refused,
    };
    proxy
        .metrics
        .rate_limited(&refused.limit.policy, &refused.limit.rule.name, false);
    let after = refused.retry_after.unwrap_or(Duration::from_secs(1));
    let mut response = with_retry_after(
        problem(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "Rule {} of RateLimitPolicy {} allows {} requests per {}; retry after the Retry-After seconds.",
                refused.limit.rule.name,
                refused.limit.policy,
                refused.limit.rule.requests,
                refused.limit.rule.period
            ),
        ),
        after,
    );
    rate_limit::headers(&refused, response.headers_mut());
    Err(response)
}

/// `X-Forwarded-*`, `X-Real-IP` and `traceparent` for the upstream. A chain (and the scheme)
/// a trusted proxy sent is extended; what an untrusted client wrote there is replaced.
/// `X-Real-IP` is always the client as the gateway judged it (the one rate limits count), so
/// services need not read the chain (orders hands it to the payment fraud rules).
/// Sets the headers the gateway vouches for (hop-by-hop headers are already gone).
fn forward_headers(headers: &mut HeaderMap, peer: SocketAddr, trusted_peer: bool, client_ip: &str) {
    headers.remove("x-real-ip");
    if let Ok(v) = HeaderValue::from_str(client_ip) {
        headers.insert("x-real-ip", v);
    }
    let host = headers.get(header::HOST).cloned();
    let chain = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .filter(|_| trusted_peer);
    let forwarded_for = match chain {
        Some(chain) => format!("{chain}, {}", peer.ip().to_canonical()),
        None => peer.ip().to_canonical().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
    let proto_from_proxy = trusted_peer
        && headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v == "https" || v == "http");
    if !proto_from_proxy {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host);
    }
    headers.remove(header::HOST);
    // `traceparent` is set per attempt, naming the attempt's client span (see `call`).
}

/// Gives back a half-open probe if the call is dropped before its outcome is known.
struct ProbeGuard<'a> {
    circuit: Option<&'a Arc<Circuit>>,
    admission: Option<Admission>,
}

impl ProbeGuard<'_> {
    fn record(&mut self, ok: bool) {
        if let (Some(c), Some(a)) = (self.circuit, self.admission.take())
            && let Some(b) = &c.breaker
        {
            b.record(a, ok, Instant::now());
        }
    }
}

impl ProbeGuard<'_> {
    /// Gives the probe back without a verdict.
    fn abandon(&mut self) {
        if let (Some(c), Some(a)) = (self.circuit, self.admission.take())
            && let Some(b) = &c.breaker
        {
            b.abandon(a);
        }
    }
}

/// Whether a failed upstream call failed on the client's side: the request body went over the
/// limit or broke off (the upstream did nothing wrong).
fn client_body_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_user() || h.is_body_write_aborted())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Answers 413 for a body declared over the route's limit, unread, and closes the
/// connection. What the client still sends is drained by the kit's lingering close
/// (`tienda_kit::serve`), so the answer is not lost to a reset.
fn refuse_declared_too_large(limit: usize) -> Response {
    let mut response = too_large(limit);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer for a body over the route's limit.
fn too_large(limit: usize) -> Response {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Request body too large",
        format!("Bodies of this route are limited to {limit} bytes."),
    )
}

/// The answer for a request body that could not be read whole.
fn body_problem(error: &(dyn std::error::Error + 'static), limit: usize) -> Response {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        source = e.source();
    }
    problem(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "The request body could not be read",
        "The request body broke off before its end; send it again.".into(),
    )
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The answer when the circuit refuses or the call fails and the policy has a fallback.
fn fallback(
    circuit: &Circuit,
    service: &str,
    slug: &str,
    title: &str,
    detail: String,
    after: Option<Duration>,
) -> Response {
    let (status, detail, after) = match &circuit.fallback {
        Some(f) => (
            f.status,
            f.detail.clone().unwrap_or(detail),
            f.retry_after.or(after),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, detail, after),
    };
    tracing::debug!(service, slug, "fallback answer");
    with_retry_after(
        problem(status, slug, title, detail),
        after.unwrap_or(Duration::from_secs(1)),
    )
}

/// The answer for a call that failed: the policy's fallback if it has one, else the plain
/// `(status, slug, title)` problem.
fn failed(
    circuit: Option<&Arc<Circuit>>,
    service: &str,
    (status, slug, title): (StatusCode, &str, &str),
    detail: String,
) -> Response {
    match circuit.filter(|c| c.fallback.is_some()) {
        Some(c) => fallback(c, service, slug, title, detail, None),
        None => problem(status, slug, title, detail),
    }
}

/// Sends the request, its body cut at `max_body` bytes, under the service's circuit; returns
/// the answer and the attempts made.
async fn call(
    proxy: &Proxy,
    service: &str,
    pool: &Pool,
    circuit: Option<&Arc<Circuit>>,
    request: Request,
    max_body: usize,
) -> (Response, u32) {
    let now = Instant::now();
    let deadline = now
        + circuit
            .and_then(|c| c.timeout)
            .unwrap_or(proxy.default_timeout);
    let _counted = circuit.map(|c| c.start());

    // A body that may be sent twice is read first — before the breaker and the bulkhead, so a
    // client trickling it holds neither a probe nor a slot — and within the deadline. Only a
    // body known to fit the common limit is held: on a route with a larger one (the catalog
    // import, 64 MiB) a body of unknown or larger size is streamed and tried once, never
    // retried, so the gateway's memory never holds a bulk upload.
    let fits_in_memory = request
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n <= proxy.body_limits.common() as u64);
    let retry = circuit
        .and_then(|c| c.retry.as_ref())
        .filter(|r| r.attempts > 1 && may_retry(request.method(), request.headers()))
        .filter(|_| max_body <= proxy.body_limits.common() || fits_in_memory);
    let (mut parts, body) = request.into_parts();
    let mut streamed = None;
    let mut buffered = None;
    if retry.is_some() {
        let read = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            Limited::new(body, max_body).collect(),
        )
        .await;
        match read {
            Ok(Ok(collected)) => buffered = Some(collected.to_bytes()),
            Ok(Err(error)) => return (body_problem(&*error, max_body), 0),
            Err(_) => {
                return (
                    problem(
                        StatusCode::REQUEST_TIMEOUT,
                        "request-timeout",
                        "Request body too slow",
                        "The request body did not arrive in time; send it again.".into(),
                    ),
                    0,
                );
            }
        }
    } else {
        streamed = Some(Body::new(Limited::new(body, max_body)));
    }

    let mut probe = ProbeGuard {
        circuit,
        admission: None,
    };
    if let Some(c) = circuit
        && let Some(breaker) = &c.breaker
    {
        let admission = breaker.admit(now);
        proxy.metrics.circuit_state(service, breaker.phase(now));
        if let Admission::Refused(after) = admission {
            proxy.metrics.refused(service, "circuit-open");
            let answer = fallback(
                c,
                service,
                "circuit-open",
                "Service unavailable",
                format!(
                    "Calls to {service} are paused after repeated failures; retry after the Retry-After seconds."
                ),
                Some(after),
            );
            return (answer, 0);
        }
        probe.admission = Some(admission);
    }
    let _slot = match circuit.and_then(|c| c.bulkhead.as_ref().map(|b| (c, b))) {
        // Waiting in the queue counts against the call's deadline.
        Some((c, bulkhead)) => match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            bulkhead.enter(),
        )
        .await
        .ok()
        .flatten()
        {
            Some(slot) => Some(slot),
            None => {
                proxy.metrics.refused(service, "bulkhead-full");
                // Not the destination's failure: the probe, if any, is given back.
                let answer = fallback(
                    c,
                    service,
                    "bulkhead-full",
                    "Service busy",
                    format!("{service} has as many calls in flight as it may take; retry shortly."),
                    None,
                );
                return (answer, 0);
            }
        },
        None => None,
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| axum::http::uri::PathAndQuery::from_static("/"));
    let outlier = circuit.and_then(|c| c.outlier.as_ref());

    let mut attempt = 0u32;
    let mut avoid = None;
    let mut _retry_slot = None;
    loop {
        attempt += 1;
        let Some(endpoint) = pool.pick(Instant::now(), avoid.as_ref()) else {
            return (
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream-unavailable",
                    "Service unavailable",
                    format!("The {service} service has no endpoint."),
                ),
                attempt,
            );
        };
        let built = endpoint.authority.clone().and_then(|authority| {
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query.clone())
                .build()
                .ok()
        });
        let uri: Uri =
            match built.map_or_else(|| format!("{}{path_and_query}", endpoint.base).parse(), Ok) {
                Ok(uri) => uri,
                Err(e) => {
                    return (
                        problem(
                            StatusCode::BAD_REQUEST,
                            "bad-request",
                            "The request is malformed",
                            format!("The path cannot be forwarded: {e}"),
                        ),
                        attempt,
                    );
                }
            };
        let mut upstream_request = axum::http::Request::new(match &buffered {
            Some(bytes) => Body::from(bytes.clone()),
            None => streamed.take().unwrap_or_else(Body::empty),
        });
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri;
        // Only a request that may be retried needs its headers again.
        *upstream_request.headers_mut() = if retry.is_some() {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };

        let left = deadline.saturating_duration_since(Instant::now());
        let per_try = retry
            .and_then(|r| r.per_try_timeout)
            .map_or(left, |t| t.min(left));
        // One client span per attempt, so a retried request shows each try in the trace.
        let mut span = Span::child(format!("{} {service}", parts.method), Kind::Client);
        if span.is_recording() {
            span.set("http.request.method", parts.method.to_string());
            span.set("server.address", endpoint.base.clone());
            span.set("url.path", path_and_query.path().to_owned());
            span.set("tienda.upstream", service.to_owned());
            span.set("tienda.attempt", i64::from(attempt));
        }
        if let Ok(v) = HeaderValue::from_str(&span.context().to_header()) {
            upstream_request
                .headers_mut()
                .insert(tienda_kit::trace_context::HEADER, v);
        }
        let sent = Instant::now();
        let result = {
            let _in_flight = endpoint.start();
            tokio::time::timeout(per_try, proxy.client().request(upstream_request)).await
        };
        match &result {
            Ok(Ok(response)) => {
                span.set(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                );
                if response.status().is_server_error() {
                    span.fail(response.status().to_string());
                }
            }
            Ok(Err(error)) => span.fail(error.to_string()),
            Err(_) => span.fail("timed out"),
        }
        span.end();
        proxy.metrics.upstream_latency(service, sent.elapsed());
        let failure = match &result {
            Ok(Ok(response)) => {
                let s = response.status();
                (s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS)
                    .then_some(Failure::Status(s))
            }
            Ok(Err(error)) if error.is_connect() => Some(Failure::Connect),
            // The client's body failed (over the limit, or the upload was cut): the
            // destination did nothing wrong — no retry, no breaker or ejection count.
            Ok(Err(error)) if client_body_failed(error) => {
                probe.abandon();
                return (body_problem(error, max_body), attempt);
            }
            Ok(Err(_)) => Some(Failure::Reset),
            Err(_) => Some(Failure::Timeout),
        };
        let against = failure.is_some_and(Failure::counts_against);
        if pool.report(&endpoint, !against, outlier, Instant::now()) {
            proxy.metrics.ejected(service);
        }
        if let (Some(f), Some(r), Some(c)) = (failure, retry, circuit)
            && attempt < r.attempts
            && f.retryable(&r.retry_on)
        {
            let pause = r.backoff.delay(attempt);
            let time_left = deadline.saturating_duration_since(Instant::now());
            // The retry that just failed is no longer in flight.
            _retry_slot = None;
            if time_left > pause
                && let Some(slot) = c.take_retry()
            {
                _retry_slot = Some(slot);
                proxy.metrics.retried(service);
                tracing::debug!(service, endpoint = %endpoint.base, ?f, attempt, "retrying");
                tokio::time::sleep(pause).await;
                avoid = Some(endpoint);
                continue;
            }
        }
        probe.record(!against);
        if let Some(c) = circuit
            && let Some(b) = &c.breaker
        {
            proxy
                .metrics
                .circuit_state(service, b.phase(Instant::now()));
        }
        let answer = match result {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Ok(Err(error)) => {
                tracing::warn!(service, endpoint = %endpoint.base, error = %error, attempt, "upstream failed");
                failed(
                    circuit,
                    service,
                    (
                        StatusCode::BAD_GATEWAY,
                        "upstream-unavailable",
                        "Bad gateway",
                    ),
                    format!("The {service} service did not answer; retry shortly."),
                )
            }
            Err(_) => failed(
                circuit,
                service,
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream-timeout",
                    "Gateway timeout",
                ),
                format!(
                    "The {service} service did not answer within {} ms.",
                    per_try.as_millis()
                ),
            ),
        };
        return (answer, attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_goes_to_a_listed_upstream() {
        for (_, service) in ROUTES {
            assert!(UPSTREAMS.contains(&service), "{service}");
        }
    }

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
            ("/v1/checkout", Some("orders")),
            ("/v1/invoices/1.pdf", Some("payments")),
            ("/v1/webhooks/stripe", Some("payments")),
            ("/v1/notifications", Some("notifications")),
            ("/v1/productsx", None),
            ("/v2/products", None),
        ] {
            assert_eq!(route(path).map(|r| r.1), service, "{path}");
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
}
