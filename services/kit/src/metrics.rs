//! Prometheus metrics: one registry per process (per application in tests), the HTTP request
//! metrics every service gets, and the `/metrics` endpoint.
//!
//! `/metrics` answers in Prometheus' text format, or in OpenMetrics when the scraper asks for
//! it (`Accept: application/openmetrics-text`, as Prometheus does with exemplar storage on):
//! then the buckets of `http_request_duration_seconds` carry exemplars — the trace id of a
//! recent request that landed in each, when traces are exported — so a latency panel links
//! to a trace. The `prometheus` crate writes no OpenMetrics, so that encoder is here.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use dashmap::DashMap;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, dense below 50 ms where our budgets are.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry and the HTTP metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    /// Everything this process exports; services register their own metrics here.
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    exemplars: Arc<DashMap<ExemplarKey, Exemplar>>,
}

/// A request duration bucket: the series' method, route and status labels and the bucket's
/// index (the `+Inf` bucket is the number of bounds).
type ExemplarKey = (String, String, String, usize);

/// The last sampled request of a bucket.
#[derive(Debug, Clone)]
struct Exemplar {
    trace_id: String,
    seconds: f64,
    at: f64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry whose metrics carry the constant label `service`.
    pub fn new(service: &str) -> Self {
        let labels = [("service".to_owned(), service.to_owned())]
            .into_iter()
            .collect();
        let registry = Registry::new_custom(None, Some(labels)).expect("valid registry labels");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route template and status",
            ),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to answer HTTP requests",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new("http_requests_in_flight", "HTTP requests being answered"),
            &["method", "route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Self {
            registry,
            requests,
            duration,
            in_flight,
            exemplars: Arc::default(),
        }
    }

    /// Keeps the current trace as the exemplar of the bucket `seconds` falls in, when traces
    /// are exported and this one is sampled (an exemplar must name a trace one can open).
    fn exemplar(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        if !crate::telemetry::tracing_enabled() {
            return;
        }
        let Some(context) = crate::trace_context::TraceContext::current() else {
            return;
        };
        if !context.sampled {
            return;
        }
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.exemplars.insert(
            (
                method.to_owned(),
                route.to_owned(),
                status.to_string(),
                bucket,
            ),
            Exemplar {
                trace_id: context.trace_id(),
                seconds,
                at,
            },
        );
    }

    /// Every metric in the OpenMetrics text format, with the request durations' exemplars.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        for family in self.registry.gather() {
            let name = family.name();
            let kind = family.get_field_type();
            let (type_name, family_name) = match kind {
                prometheus::proto::MetricType::COUNTER => match name.strip_suffix("_total") {
                    Some(base) => ("counter", base),
                    None => ("unknown", name),
                },
                prometheus::proto::MetricType::GAUGE => ("gauge", name),
                prometheus::proto::MetricType::HISTOGRAM => ("histogram", name),
                // Summaries and untyped metrics: none are registered.
                _ => continue,
            };
            let _ = writeln!(out, "# TYPE {family_name} {type_name}");
            if !family.help().is_empty() {
                let _ = writeln!(out, "# HELP {family_name} {}", escape_help(family.help()));
            }
            for metric in family.get_metric() {
                let labels: Vec<(&str, &str)> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                match kind {
                    prometheus::proto::MetricType::COUNTER => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            label_set(&labels, None),
                            number(metric.get_counter().get_value())
                        );
                    }
                    prometheus::proto::MetricType::GAUGE => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            label_set(&labels, None),
                            number(metric.get_gauge().get_value())
                        );
                    }
                    prometheus::proto::MetricType::HISTOGRAM => {
                        let histogram = metric.get_histogram();
                        let exemplar_of = |index: usize| {
                            if name != "http_request_duration_seconds" {
                                return None;
                            }
                            let label = |key: &str| {
                                labels
                                    .iter()
                                    .find(|(k, _)| *k == key)
                                    .map(|(_, v)| (*v).to_owned())
                            };
                            let key = (label("method")?, label("route")?, label("status")?, index);
                            self.exemplars.get(&key).map(|e| e.clone())
                        };
                        let buckets = histogram.get_bucket();
                        for (index, bucket) in buckets.iter().enumerate() {
                            let le = number(bucket.upper_bound());
                            let _ = write!(
                                out,
                                "{name}_bucket{} {}",
                                label_set(&labels, Some(&le)),
                                bucket.cumulative_count()
                            );
                            write_exemplar(&mut out, exemplar_of(index));
                        }
                        let _ = write!(
                            out,
                            "{name}_bucket{} {}",
                            label_set(&labels, Some("+Inf")),
                            histogram.get_sample_count()
                        );
                        write_exemplar(&mut out, exemplar_of(buckets.len()));
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            label_set(&labels, None),
                            histogram.get_sample_count()
                        );
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {}",
                            label_set(&labels, None),
                            number(histogram.get_sample_sum())
                        );
                    }
                    _ => {}
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// Records one answered request. `route` is the route template (`/v1/products/{id}`),
    /// never the raw path, so label cardinality stays bounded.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[method, route, &status])
            .inc();
        self.duration
            .with_label_values(&[method, route, &status])
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// The `method` label: the standard methods by name, anything a client invents as `other`, so
/// random methods cannot grow the label set without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Middleware (as a route layer, so the route template is known) recording request metrics.
/// Requests no route matched are all labelled `unmatched` (they never reach a route layer).
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Decremented on drop: a client that hangs up cancels this future mid-request.
    let _in_flight = InFlight::enter(metrics.in_flight.with_label_values(&[method, &route]));
    let started = Instant::now();
    let mut response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    metrics.observe(method, &route, response.status().as_u16(), seconds);
    metrics.exemplar(method, &route, response.status().as_u16(), seconds);
    // For the server span, which runs outside the router and cannot see the route.
    response
        .extensions_mut()
        .insert(crate::trace_context::MatchedRoute(route));
    response
}

/// A request counted in flight until dropped.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{value}")
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

fn label_set(labels: &[(&str, &str)], le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value));
    }
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "le=\"{le}\"");
    }
    out.push('}');
    out
}

fn write_exemplar(out: &mut String, exemplar: Option<Exemplar>) {
    match exemplar {
        Some(e) => {
            let _ = writeln!(
                out,
                " # {{trace_id=\"{}\"}} {} {:.3}",
                e.trace_id,
                number(e.seconds),
                e.at
            );
        }
        None => out.push('\n'),
    }
}

/// `GET /metrics`: OpenMetrics (with exemplars) when the scraper accepts it, else Prometheus'
/// text format.
pub async fn endpoint(
    State(metrics): State<Metrics>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            metrics.render_openmetrics(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            metrics.render(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(
            method_label(&Method::from_bytes(b"XYZZY").unwrap()),
            "other"
        );
    }
}
