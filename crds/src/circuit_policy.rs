//! `CircuitPolicy`: how every caller treats a destination — timeouts, retries, breaker,
//! bulkhead, outlier ejection, fallback.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{duration::Duration, status::PolicyStatus};

/// Resilience settings for one destination. Every caller of that destination applies them: the
/// gateway for Services, any component for an external dependency (payment provider, SMTP).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tienda.dev",
    version = "v1alpha1",
    kind = "CircuitPolicy",
    doc = "Timeouts, retries, circuit breaking, bulkhead and outlier ejection for one destination.",
    namespaced,
    status = "PolicyStatus",
    shortname = "cp",
    derive = "PartialEq",
    cel,
    printcolumn(
        name = "Target Kind",
        type_ = "string",
        json_path = ".spec.targetRef.kind"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Timeout", type_ = "string", json_path = ".spec.timeout"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.timeout) || has(self.retry) || has(self.circuitBreaker) || has(self.bulkhead) || has(self.outlierDetection)")
        .message("a CircuitPolicy must set at least one of timeout, retry, circuitBreaker, bulkhead, outlierDetection"),
    validation = Rule::new("!has(self.timeout) || !has(self.retry) || !has(self.retry.perTryTimeout) || duration(self.retry.perTryTimeout) <= duration(self.timeout)")
        .message("retry.perTryTimeout must not exceed timeout")
        .field_path(".retry.perTryTimeout"),
    validation = Rule::new("self.targetRef.kind == 'Service' || !has(self.outlierDetection)")
        .message("outlierDetection needs endpoints to eject: it applies to Service targets only")
        .field_path(".outlierDetection")
)]
pub struct CircuitPolicySpec {
    /// The destination: a `Service` resource or a named `External` dependency.
    pub target_ref: CircuitTargetRef,

    /// Deadline for a whole call, retries included (10ms to 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("duration(self) >= duration('10ms') && duration(self) <= duration('5m')")
            .message("timeout must be between 10ms and 5m")
    )]
    pub timeout: Option<Duration>,

    /// Retries of failed calls. Only idempotent requests (or ones with an `Idempotency-Key`)
    /// are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,

    /// Stop calling a failing destination for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,

    /// Cap concurrent calls so one slow destination cannot take every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<Bulkhead>,

    /// Take misbehaving endpoints of a Service out of load balancing for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,

    /// The answer given when the call is refused (breaker open, bulkhead full) or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// The destination of a CircuitPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct CircuitTargetRef {
    /// `Service` or `External`.
    pub kind: CircuitTargetKind,
    /// Name of the Service resource, or of the external dependency as components know it
    /// (`stripe`, `smtp`, ...).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Kinds a CircuitPolicy can target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum CircuitTargetKind {
    /// A `Service` resource of the shop.
    Service,
    /// A dependency outside the shop, named by the components that call it.
    External,
}

/// Retry settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all, the first included (1 disables retries).
    #[schemars(range(min = 1, max = 10))]
    pub attempts: i32,

    /// Delay between attempts: exponential from `base`, capped at `max`, with full jitter.
    #[serde(default = "default_backoff")]
    pub backoff: Backoff,

    /// Retries may add at most this percentage of the calls in flight (default 20), so retries
    /// cannot multiply load on a struggling destination.
    #[serde(default = "default_budget_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub budget_percent: i32,

    /// Which failures are retried (default: `ConnectFailure`, `Reset`, `GatewayError`).
    #[serde(default = "default_retry_on")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub retry_on: Vec<RetryOn>,

    /// Deadline of each attempt (default: none beyond `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
}

fn default_backoff() -> Backoff {
    Backoff {
        base: "25ms".parse().expect("valid duration"),
        max: "250ms".parse().expect("valid duration"),
    }
}

fn default_budget_percent() -> i32 {
    20
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::ConnectFailure,
        RetryOn::Reset,
        RetryOn::GatewayError,
    ]
}

/// Exponential backoff bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.base) <= duration(self.max)")
        .message("backoff.base must not exceed backoff.max"),
    validation = Rule::new("duration(self.base) >= duration('1ms')")
        .message("backoff.base must be at least 1ms")
        .field_path(".base")
)]
pub struct Backoff {
    /// Delay before the first retry.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// A failure that may be retried.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RetryOn {
    /// The connection could not be made.
    ConnectFailure,
    /// The connection broke before a response.
    Reset,
    /// The attempt timed out (`perTryTimeout`).
    Timeout,
    /// 502, 503 or 504.
    GatewayError,
    /// Any 5xx.
    ServerError,
    /// 429 Too Many Requests.
    TooManyRequests,
}

/// Circuit breaker settings. It opens on `consecutiveFailures`, or when `failureRatio` of at
/// least `minRequests` calls in `window` failed; stays open `openFor`; then lets
/// `halfOpenRequests` probes through, closing if they succeed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.consecutiveFailures) || has(self.failureRatio)")
        .message("set consecutiveFailures, failureRatio, or both"),
    validation = Rule::new("duration(self.window) >= duration('1s') && duration(self.window) <= duration('10m')")
        .message("window must be between 1s and 10m")
        .field_path(".window"),
    validation = Rule::new("duration(self.openFor) >= duration('100ms') && duration(self.openFor) <= duration('1h')")
        .message("openFor must be between 100ms and 1h")
        .field_path(".openFor")
)]
pub struct CircuitBreaker {
    /// Open after this many failures in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub consecutive_failures: Option<i32>,

    /// Open when this fraction (0 < r ≤ 1) of calls in `window` failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("failureRatio must be in (0, 1]"))]
    pub failure_ratio: Option<f64>,

    /// Calls needed in `window` before `failureRatio` is judged (default 20).
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_requests: i32,

    /// The sliding window failures are counted over (default `10s`).
    #[serde(default = "default_window")]
    pub window: Duration,

    /// How long the breaker stays open before probing (default `30s`).
    #[serde(default = "default_open_for")]
    pub open_for: Duration,

    /// Probe calls let through when half-open; all must succeed to close (default 1).
    #[serde(default = "default_half_open_requests")]
    #[schemars(range(min = 1, max = 100))]
    pub half_open_requests: i32,
}

fn default_min_requests() -> i32 {
    20
}

fn default_window() -> Duration {
    "10s".parse().expect("valid duration")
}

fn default_open_for() -> Duration {
    "30s".parse().expect("valid duration")
}

fn default_half_open_requests() -> i32 {
    1
}

/// Concurrency limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Bulkhead {
    /// Calls in flight at once, per caller replica.
    #[schemars(range(min = 1, max = 100000))]
    pub max_concurrent: i32,
    /// Calls waiting for a slot; beyond it calls are refused at once (default 0).
    #[serde(default)]
    #[schemars(range(min = 0, max = 100000))]
    pub max_queued: i32,
}

/// Outlier ejection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Failures in a row (5xx or connection errors) that eject an endpoint (default 5).
    #[serde(default = "default_consecutive_errors")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_errors: i32,
    /// How long an endpoint stays ejected the first time; doubles on each repeat (default `30s`).
    #[serde(default = "default_open_for")]
    pub base_ejection_time: Duration,
    /// Most endpoints that may be ejected at once, in percent (default 50).
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: i32,
}

fn default_consecutive_errors() -> i32 {
    5
}

fn default_max_ejection_percent() -> i32 {
    50
}

/// The answer when a call is refused.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// HTTP status of the problem+json answer (default 503).
    #[serde(default = "default_fallback_status")]
    #[x_kube(validation = Rule::new("self in [429, 502, 503, 504]").message("must be 429, 502, 503 or 504"))]
    pub status: i32,
    /// `Retry-After` sent with it (default: the breaker's remaining open time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
    /// `detail` of the problem document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub detail: Option<String>,
}

fn default_fallback_status() -> i32 {
    503
}
