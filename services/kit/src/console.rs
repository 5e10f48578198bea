//! The operations console: one page that answers "why is this order stuck?" — the streams
//! and durable consumers with their lag and redeliveries, the dead letters with their reason
//! and replay/discard buttons, the sagas in flight with their step and age, the circuits and
//! recent rate-limit refusals, and the policies in force with their generations.
//!
//! It is served on an operator-only listener (`tienda up` runs it beside the shop; never the
//! gateway's public port) and gathers what it shows from the components' admin listeners
//! (`/metrics`, `/policies`, `/admin/dead-letters`, orders' `/admin/sagas`) and from JetStream.
//! Everything but the page itself needs an admin's access token from the auth service: the
//! page signs in through `POST /console/api/login` (auth's own login) and keeps the token for
//! the tab; the console checks it, and hands it on to the admin APIs, which check it again.
//!
//! Hand-written (a page of HTML and vanilla JavaScript, embedded): the admin tools of the
//! stack's projects (Grafana, NATS' nui, bull-board) each see one system, and a page this
//! small needs no build step.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use axum::{
    Extension, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{delete, get, post},
};
use futures::{StreamExt, future::join_all};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    jwt::{Claims, RequireRole, Verifier, require_role},
    problem::Problem,
};

pub mod traces;

use traces::TraceStore;

/// A component the console looks at: its name and its admin listener's base URL.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `orders`.
    pub name: String,
    /// `http://127.0.0.1:3103`.
    pub admin_url: String,
}

/// What the console needs.
#[derive(Clone)]
pub struct Console {
    /// The components, in the order shown.
    pub components: Vec<Watched>,
    /// auth's public `POST /v1/auth/login`, for the page's sign-in.
    pub login_url: String,
    /// JetStream, for the streams and consumers (`None`: not shown).
    pub jetstream: Option<jetstream::Context>,
    /// Checks the admin's token.
    pub verifier: Verifier,
    http: reqwest::Client,
    refusals: Arc<Mutex<Refusals>>,
    traces: Option<TraceStore>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("components", &self.components)
            .finish_non_exhaustive()
    }
}

/// Rate-limit refusal totals seen, to tell the recent ones: (when, total) per series.
#[derive(Default)]
struct Refusals(BTreeMap<String, Vec<(Instant, f64)>>);

/// How far back "recent" refusals go.
const RECENT: Duration = Duration::from_secs(60);

impl Refusals {
    /// Records `total` for `key` and answers how many were added in the last minute (since
    /// the console first saw the series, if that is sooner).
    fn recent(&mut self, key: &str, total: f64, now: Instant) -> f64 {
        let samples = self.0.entry(key.to_owned()).or_default();
        samples.retain(|(at, _)| now.duration_since(*at) <= RECENT);
        samples.push((now, total));
        let oldest = samples.first().map_or(total, |(_, t)| *t);
        (total - oldest).max(0.0)
    }
}

impl Console {
    /// A console over `components`.
    pub fn new(
        components: Vec<Watched>,
        login_url: String,
        jetstream: Option<jetstream::Context>,
        verifier: Verifier,
    ) -> Self {
        Self {
            components,
            login_url,
            jetstream,
            verifier,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a client with the ring TLS provider installed"),
            refusals: Arc::default(),
            traces: None,
        }
    }

    /// With a trace viewer: spans sent to `POST /v1/traces` (OTLP/HTTP) are kept in `store`
    /// and shown on the page. The receiver takes no token: serve it on loopback only.
    pub fn with_traces(mut self, store: TraceStore) -> Self {
        self.traces = Some(store);
        self
    }

    /// `/console` (the page, no token needed to load it), `/console/api/login`, and the
    /// admin-only `/console/api/state` and dead-letter actions.
    pub fn router(self) -> Router {
        let verifier = self.verifier.clone();
        let admin_only = Router::new()
            .route("/console/api/state", get(state))
            .route(
                "/console/api/dead-letters/{component}/{sequence}/replay",
                post(replay),
            )
            .route(
                "/console/api/dead-letters/{component}/{sequence}",
                delete(discard),
            )
            .route("/console/api/traces", get(recent_traces))
            .route("/console/api/traces/{trace_id}", get(one_trace))
            .route_layer(axum::middleware::from_fn_with_state(
                RequireRole {
                    verifier,
                    role: "admin",
                },
                require_role,
            ));
        let ingest = match self.traces.clone() {
            Some(store) => Router::new().route(
                "/v1/traces",
                post(move |headers: HeaderMap, body: axum::body::Bytes| {
                    traces::ingest(store.clone(), headers, body)
                }),
            ),
            None => Router::new(),
        };
        Router::new()
            .route("/console", get(page))
            .route("/console/api/login", post(login))
            .merge(admin_only)
            .with_state(Arc::new(self))
            .merge(ingest)
    }

    fn admin_url(&self, component: &str) -> Option<&str> {
        self.components
            .iter()
            .find(|c| c.name == component)
            .map(|c| c.admin_url.as_str())
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Only this page's own script and requests; no framing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        Html(include_str!("console.html")),
    )
        .into_response()
}

/// Signs in at auth with the admin's email and password and hands back auth's answer (the
/// page keeps the access token for the tab).
async fn login(State(console): State<Arc<Console>>, body: axum::body::Bytes) -> Response {
    let answer = console
        .http
        .post(&console.login_url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match answer {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = answer
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let body = answer.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(error) => Problem::unavailable(format!(
            "The auth service did not answer ({error}); is it running?"
        ))
        .into_response(),
    }
}

/// A stream and its durable consumers.
#[derive(Debug, Serialize)]
struct StreamState {
    name: String,
    messages: u64,
    consumers: Vec<ConsumerState>,
}

#[derive(Debug, Serialize)]
struct ConsumerState {
    name: String,
    /// Messages not delivered yet (lag).
    pending: u64,
    /// Delivered and not acknowledged.
    ack_pending: usize,
    /// Delivered more than once and not acknowledged yet.
    redelivered: usize,
}

async fn streams(jetstream: &jetstream::Context) -> Result<Vec<StreamState>, String> {
    let mut names = jetstream.stream_names();
    let mut out = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| e.to_string())?;
        let mut stream = jetstream
            .get_stream(&name)
            .await
            .map_err(|e| e.to_string())?;
        let messages = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .messages;
        let mut consumers = Vec::new();
        let mut infos = stream.consumers();
        while let Some(info) = infos.next().await {
            let info = info.map_err(|e| e.to_string())?;
            consumers.push(ConsumerState {
                name: info.name,
                pending: info.num_pending,
                ack_pending: info.num_ack_pending,
                redelivered: info.num_redelivered,
            });
        }
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(StreamState {
            name,
            messages,
            consumers,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A Prometheus text line's name, labels and value.
fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels = labels
        .split("\",")
        .filter_map(|pair| pair.split_once("=\""))
        .map(|(k, v)| (k.trim_matches(','), v.trim_end_matches('"')))
        .collect();
    Some((name, labels, value))
}

/// What one component's admin listener says.
async fn component_state(
    console: &Console,
    component: &Watched,
    token: &str,
    now: Instant,
) -> Value {
    let get = |path: &str, authorized: bool| {
        let mut request = console.http.get(format!("{}{path}", component.admin_url));
        if authorized {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let (metrics, policies, dead_letters, sagas) = tokio::join!(
        get("/metrics", false),
        get("/policies", false),
        get("/admin/dead-letters?limit=100", true),
        async {
            if component.name == "orders" {
                Some(get("/admin/sagas", true).await)
            } else {
                None
            }
        }
    );
    let metrics = match metrics {
        Ok(answer) if answer.status().is_success() => answer.text().await.ok(),
        _ => None,
    };
    let json_of = |answer: Result<reqwest::Response, reqwest::Error>| async move {
        match answer {
            Ok(answer) if answer.status().is_success() => answer.json::<Value>().await.ok(),
            _ => None,
        }
    };
    let mut circuits = Vec::new();
    let mut refusals = Vec::new();
    let mut generations = Vec::new();
    if let Some(text) = &metrics {
        let mut seen = console.refusals.lock().expect("not poisoned");
        for (name, labels, value) in text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(sample)
        {
            match name {
                "gateway_circuit_state" => circuits.push(json!({
                    "target": labels.get("upstream"), "state": phase(value)})),
                "outbound_circuit_state" => circuits.push(json!({
                    "target": labels.get("target"), "state": phase(value)})),
                "gateway_rate_limited_total" => {
                    let key = format!(
                        "{}/{}/{}/{}",
                        component.name,
                        labels.get("policy").unwrap_or(&""),
                        labels.get("rule").unwrap_or(&""),
                        labels.get("shadow").unwrap_or(&"")
                    );
                    refusals.push(json!({
                        "policy": labels.get("policy"), "rule": labels.get("rule"),
                        "shadow": labels.get("shadow") == Some(&"true"),
                        "total": value, "last_minute": seen.recent(&key, value, now)}));
                }
                _ if name.ends_with("_policy_applied_generation") => generations.push(json!({
                    "kind": labels.get("kind"), "name": labels.get("name"),
                    "generation": value})),
                _ => {}
            }
        }
    }
    let sagas = match sagas {
        Some(answer) => json_of(answer).await,
        None => None,
    };
    json!({
        "name": component.name,
        "up": metrics.is_some(),
        "circuits": circuits,
        "rate_limited": refusals,
        "policy_generations": generations,
        "policies": json_of(policies).await,
        "dead_letters": json_of(dead_letters).await.map(|page| page["items"].clone()),
        "sagas": sagas,
    })
}

fn phase(value: f64) -> &'static str {
    match value as i64 {
        0 => "closed",
        1 => "open",
        _ => "half-open",
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

/// `GET /console/api/state`: everything the page shows, read now.
async fn state(
    State(console): State<Arc<Console>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let now = Instant::now();
    let (streams, components) = tokio::join!(
        async {
            match &console.jetstream {
                Some(js) => Some(streams(js).await),
                None => None,
            }
        },
        join_all(
            console
                .components
                .iter()
                .map(|c| component_state(&console, c, &token, now))
        )
    );
    let (streams, streams_error) = match streams {
        Some(Ok(streams)) => (Some(streams), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    axum::Json(json!({
        "generated_at": chrono::Utc::now(),
        "signed_in_as": claims.sub,
        "streams": streams,
        "streams_error": streams_error,
        "traces": console.traces.is_some(),
        "components": components,
    }))
    .into_response()
}

/// `GET /console/api/traces`: the 100 most recent traces the viewer holds.
async fn recent_traces(State(console): State<Arc<Console>>) -> Response {
    match &console.traces {
        Some(store) => axum::Json(json!({"items": store.recent(100)})).into_response(),
        None => Problem::not_found(
            "This console keeps no traces: start `tienda up --traces`, or open the trace store \
             OTEL_EXPORTER_OTLP_ENDPOINT points at.",
        )
        .into_response(),
    }
}

/// `GET /console/api/traces/{trace_id}`: one trace's spans, by start.
async fn one_trace(State(console): State<Arc<Console>>, Path(trace_id): Path<String>) -> Response {
    match console.traces.as_ref().and_then(|s| s.trace(&trace_id)) {
        Some(spans) => axum::Json(json!({"trace_id": trace_id, "spans": spans})).into_response(),
        None => Problem::not_found(format!("No trace {trace_id} is kept here.")).into_response(),
    }
}

/// Hands a dead-letter action to the component's admin API, with the admin's token.
async fn forward(
    console: &Console,
    method: reqwest::Method,
    component: &str,
    path: String,
    headers: &HeaderMap,
) -> Response {
    let Some(base) = console.admin_url(component) else {
        return Problem::not_found(format!("No component {component} in this shop."))
            .into_response();
    };
    let answer = console
        .http
        .request(method, format!("{base}{path}"))
        .bearer_auth(bearer(headers))
        .send()
        .await;
    match answer {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = answer.bytes().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(error) => Problem::unavailable(format!(
            "{component}'s admin listener did not answer ({error}); is it running?"
        ))
        .into_response(),
    }
}

async fn replay(
    State(console): State<Arc<Console>>,
    Path((component, sequence)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/admin/dead-letters/{sequence}/replay");
    forward(&console, reqwest::Method::POST, &component, path, &headers).await
}

async fn discard(
    State(console): State<Arc<Console>>,
    Path((component, sequence)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/admin/dead-letters/{sequence}");
    forward(
        &console,
        reqwest::Method::DELETE,
        &component,
        path,
        &headers,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_are_read_with_their_labels() {
        let (name, labels, value) =
            sample(r#"gateway_rate_limited_total{policy="auth",rule="sign-in",shadow="false",service="gateway"} 3"#)
                .unwrap();
        assert_eq!(name, "gateway_rate_limited_total");
        assert_eq!(labels["policy"], "auth");
        assert_eq!(labels["rule"], "sign-in");
        assert_eq!(labels["shadow"], "false");
        assert_eq!(labels["service"], "gateway");
        assert_eq!(value, 3.0);
        assert_eq!(sample("process_threads 7").unwrap().2, 7.0);
    }

    #[test]
    fn recent_refusals_are_those_of_the_last_minute() {
        let mut seen = Refusals::default();
        let start = Instant::now();
        assert_eq!(seen.recent("a", 5.0, start), 0.0);
        assert_eq!(seen.recent("a", 8.0, start + Duration::from_secs(30)), 3.0);
        // The first sample is over a minute old now: counted from the second.
        assert_eq!(seen.recent("a", 9.0, start + Duration::from_secs(70)), 1.0);
    }
}
