//! The gateway's own metrics, per route and upstream, beside the kit's HTTP metrics.

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

use tienda_kit::resilience::Phase;

/// Latency buckets in seconds, dense where the gateway's budget is (≤ 0.5 ms added).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Cheap to clone.
#[derive(Clone)]
pub struct GatewayMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream: HistogramVec,
    rate_limited: IntCounterVec,
    circuit: IntGaugeVec,
    retries: IntCounterVec,
    refused: IntCounterVec,
    ejections: IntCounterVec,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    if let Err(error) = registry.register(Box::new(c.clone())) {
        tracing::warn!(%error, "gateway metric not registered");
    }
    c
}

impl GatewayMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        Self {
            requests: counter(
                "gateway_requests_total",
                "Requests answered by the gateway, by route, upstream and status",
                &["route", "upstream", "status"],
            ),
            duration: histogram(
                "gateway_request_duration_seconds",
                "Time from request to answer headers at the gateway",
                &["route", "upstream"],
            ),
            upstream: histogram(
                "gateway_upstream_duration_seconds",
                "Time an upstream attempt took to answer",
                &["upstream"],
            ),
            rate_limited: counter(
                "gateway_rate_limited_total",
                "Requests over a rate limit (shadow=true: counted, not refused)",
                &["policy", "rule", "shadow"],
            ),
            circuit: register(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_circuit_state",
                        "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
                    ),
                    &["upstream"],
                )
                .expect("valid metric"),
            ),
            retries: counter(
                "gateway_retries_total",
                "Retried upstream attempts",
                &["upstream"],
            ),
            refused: counter(
                "gateway_circuit_refused_total",
                "Calls refused without trying: circuit-open, bulkhead-full",
                &["upstream", "reason"],
            ),
            ejections: counter(
                "gateway_endpoint_ejections_total",
                "Endpoints ejected as outliers",
                &["upstream"],
            ),
        }
    }

    /// A request answered.
    pub fn answered(&self, route: &str, upstream: &str, status: StatusCode, started: Instant) {
        self.requests
            .with_label_values(&[route, upstream, status.as_str()])
            .inc();
        self.duration
            .with_label_values(&[route, upstream])
            .observe(started.elapsed().as_secs_f64());
    }

    /// One upstream attempt's time.
    pub fn upstream_latency(&self, upstream: &str, took: Duration) {
        self.upstream
            .with_label_values(&[upstream])
            .observe(took.as_secs_f64());
    }

    /// A request over a limit.
    pub fn rate_limited(&self, policy: &str, rule: &str, shadow: bool) {
        self.rate_limited
            .with_label_values(&[policy, rule, if shadow { "true" } else { "false" }])
            .inc();
    }

    /// Creates every per-upstream series at 0 (closed circuit, no retries, refusals or
    /// ejections), so they exist before the first event and `rate()` and alerts see it.
    pub fn upstreams(&self, upstreams: &[&str]) {
        for upstream in upstreams {
            self.circuit.with_label_values(&[upstream]);
            self.retries.with_label_values(&[upstream]);
            self.ejections.with_label_values(&[upstream]);
            for reason in ["circuit-open", "bulkhead-full"] {
                self.refused.with_label_values(&[upstream, reason]);
            }
        }
    }

    /// Creates the refusal series of a rate-limit rule in force at 0.
    pub fn rate_limit_rule(&self, policy: &str, rule: &str, shadow: bool) {
        self.rate_limited
            .with_label_values(&[policy, rule, if shadow { "true" } else { "false" }]);
    }

    /// The breaker's state.
    pub fn circuit_state(&self, upstream: &str, phase: Phase) {
        self.circuit
            .with_label_values(&[upstream])
            .set(phase as i64);
    }

    /// A retry.
    pub fn retried(&self, upstream: &str) {
        self.retries.with_label_values(&[upstream]).inc();
    }

    /// A call refused by the circuit.
    pub fn refused(&self, upstream: &str, reason: &str) {
        self.refused.with_label_values(&[upstream, reason]).inc();
    }

    /// An endpoint ejected.
    pub fn ejected(&self, upstream: &str) {
        self.ejections.with_label_values(&[upstream]).inc();
    }
}
