//! CircuitPolicy enforcement for one upstream service: the deadline, retries (which failures,
//! how many, backoff with full jitter, within a budget), the [`Breaker`], the bulkhead, outlier
//! ejection settings and the fallback answer. One [`Circuit`] per service; it is kept across
//! policy reloads while its spec is unchanged, so breaker and budget state survive edits to
//! other policies.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::http::{HeaderMap, Method, StatusCode};
use tienda_crds::circuit_policy::{CircuitPolicySpec, RetryOn};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    breaker::{Breaker, BreakerConfig},
    upstream::OutlierConfig,
};

/// Retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all.
    pub attempts: u32,
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub max: Duration,
    /// Retries in flight may be at most this percentage of requests in flight (at least one
    /// retry may always be in flight, so a quiet destination is still retried); 0 disables.
    pub budget_percent: u32,
    /// Which failures are retried.
    pub retry_on: Vec<RetryOn>,
    /// Deadline of each attempt.
    pub per_try_timeout: Option<Duration>,
}

/// How an attempt ended, as far as retries, the breaker and ejection care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection.
    Connect,
    /// The connection broke before an answer.
    Reset,
    /// The attempt's deadline passed.
    Timeout,
    /// The upstream answered with this status (5xx or 429).
    Status(StatusCode),
}

impl Failure {
    /// Whether `retry_on` covers this failure.
    pub fn retryable(self, retry_on: &[RetryOn]) -> bool {
        retry_on.iter().any(|r| match (r, self) {
            (RetryOn::ConnectFailure, Failure::Connect) => true,
            (RetryOn::Reset, Failure::Reset) => true,
            (RetryOn::Timeout, Failure::Timeout) => true,
            (RetryOn::GatewayError, Failure::Status(s)) => {
                matches!(s.as_u16(), 502..=504)
            }
            (RetryOn::ServerError, Failure::Status(s)) => s.is_server_error(),
            (RetryOn::TooManyRequests, Failure::Status(s)) => s == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        })
    }

    /// Whether it counts against the destination (breaker, ejection): transport failures and
    /// 5xx answers; a 429 is the upstream protecting itself, not failing.
    pub fn counts_against(self) -> bool {
        match self {
            Failure::Status(s) => s.is_server_error(),
            _ => true,
        }
    }
}

/// The bulkhead: `max_concurrent` calls at once, `max_queued` waiting.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
}

impl Bulkhead {
    fn new(max_concurrent: usize, max_queued: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// A slot, waiting in the queue if there is room in it; `None`: full, refuse.
    pub async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        let position = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = QueueGuard(&self.queued);
        if position >= self.max_queued {
            return None;
        }
        self.slots.clone().acquire_owned().await.ok()
    }
}

struct QueueGuard<'a>(&'a AtomicUsize);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The fallback answer.
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackConfig {
    /// Status of the problem document.
    pub status: StatusCode,
    /// `Retry-After`; `None`: the breaker's remaining open time (or 1 s).
    pub retry_after: Option<Duration>,
    /// `detail` of the problem document.
    pub detail: Option<String>,
}

/// Everything a CircuitPolicy asks of calls to one service.
#[derive(Debug)]
pub struct Circuit {
    /// The policy's name.
    pub policy: String,
    /// The spec it was built from (an unchanged spec keeps this circuit on reload).
    pub spec: CircuitPolicySpec,
    /// Deadline for the whole call, retries included.
    pub timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<RetryConfig>,
    /// The breaker (shared with the next version of the policy while its settings stay).
    pub breaker: Option<Arc<Breaker>>,
    /// The bulkhead (likewise: calls in flight keep their slots across a reload).
    pub bulkhead: Option<Arc<Bulkhead>>,
    /// Ejection of misbehaving endpoints.
    pub outlier: Option<OutlierConfig>,
    /// The answer when a call is refused or fails.
    pub fallback: Option<FallbackConfig>,
    /// Requests in flight (the retry budget's base).
    requests: AtomicUsize,
    /// Retries in flight.
    retries: AtomicUsize,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl Circuit {
    /// Compiles a policy's spec, keeping `previous`'s breaker and bulkhead where their settings
    /// did not change: editing a timeout must not close an open breaker, nor free slots that
    /// calls in flight still hold.
    pub fn evolve(policy: &str, spec: &CircuitPolicySpec, previous: Option<&Circuit>) -> Self {
        let mut next = Self::new(policy, spec);
        if let Some(old) = previous {
            if old.spec.circuit_breaker == spec.circuit_breaker {
                next.breaker.clone_from(&old.breaker);
            }
            if old.spec.bulkhead == spec.bulkhead {
                next.bulkhead.clone_from(&old.bulkhead);
            }
        }
        next
    }

    /// Compiles a policy's spec.
    pub fn new(policy: &str, spec: &CircuitPolicySpec) -> Self {
        Self {
            policy: policy.to_owned(),
            spec: spec.clone(),
            timeout: spec.timeout.as_ref().map(|d| d.get()),
            retry: spec.retry.as_ref().map(|r| RetryConfig {
                attempts: count(r.attempts).max(1),
                base: r.backoff.base.get(),
                max: r.backoff.max.get(),
                budget_percent: count(r.budget_percent),
                retry_on: r.retry_on.clone(),
                per_try_timeout: r.per_try_timeout.as_ref().map(|d| d.get()),
            }),
            breaker: spec.circuit_breaker.as_ref().map(|b| {
                Arc::new(Breaker::new(BreakerConfig {
                    consecutive_failures: b.consecutive_failures.map(count),
                    failure_ratio: b.failure_ratio,
                    min_requests: count(b.min_requests),
                    window: b.window.get(),
                    open_for: b.open_for.get(),
                    half_open_requests: count(b.half_open_requests).max(1),
                }))
            }),
            bulkhead: spec.bulkhead.as_ref().map(|b| {
                Arc::new(Bulkhead::new(
                    count(b.max_concurrent).max(1) as usize,
                    count(b.max_queued) as usize,
                ))
            }),
            outlier: spec.outlier_detection.as_ref().map(|o| OutlierConfig {
                consecutive_errors: count(o.consecutive_errors).max(1),
                base_ejection_time: o.base_ejection_time.get(),
                max_ejection_percent: count(o.max_ejection_percent),
            }),
            fallback: spec.fallback.as_ref().map(|f| FallbackConfig {
                status: u16::try_from(f.status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                retry_after: f.retry_after.as_ref().map(|d| d.get()),
                detail: f.detail.clone(),
            }),
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> Counted {
        self.requests.fetch_add(1, Ordering::AcqRel);
        Counted {
            circuit: self.clone(),
            retry: false,
        }
    }

    /// Takes a retry from the budget if it has room; the guard gives it back.
    pub fn take_retry(self: &Arc<Self>) -> Option<Counted> {
        let retry = self.retry.as_ref()?;
        if retry.budget_percent == 0 {
            return None;
        }
        let requests = self.requests.load(Ordering::Acquire);
        let allowed = (requests * retry.budget_percent as usize / 100).max(1);
        let mut current = self.retries.load(Ordering::Acquire);
        loop {
            if current >= allowed {
                return None;
            }
            match self.retries.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Counted {
                        circuit: self.clone(),
                        retry: true,
                    });
                }
                Err(now) => current = now,
            }
        }
    }
}

/// A request or retry in flight, counted for the budget.
#[derive(Debug)]
pub struct Counted {
    circuit: Arc<Circuit>,
    retry: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.circuit.retries
        } else {
            &self.circuit.requests
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a request may be sent twice: its method is idempotent (RFC 9110 §9.2.2) or it
/// carries an `Idempotency-Key`, which makes the service answer a repeat with the first answer.
pub fn may_retry(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(yaml: &str) -> Arc<Circuit> {
        let spec: CircuitPolicySpec = serde_saphyr::from_str(yaml).expect("spec parses");
        Arc::new(Circuit::new("p", &spec))
    }

    #[test]
    fn only_idempotent_requests_or_ones_with_a_key_may_be_retried() {
        let mut h = HeaderMap::new();
        assert!(may_retry(&Method::GET, &h));
        assert!(may_retry(&Method::PUT, &h));
        assert!(!may_retry(&Method::POST, &h));
        assert!(!may_retry(&Method::PATCH, &h));
        h.insert("idempotency-key", "k1".parse().unwrap());
        assert!(may_retry(&Method::POST, &h));
    }

    #[test]
    fn failures_map_to_retry_on_kinds() {
        let gateway = [RetryOn::GatewayError];
        assert!(Failure::Status(StatusCode::SERVICE_UNAVAILABLE).retryable(&gateway));
        assert!(!Failure::Status(StatusCode::INTERNAL_SERVER_ERROR).retryable(&gateway));
        assert!(
            Failure::Status(StatusCode::INTERNAL_SERVER_ERROR).retryable(&[RetryOn::ServerError])
        );
        assert!(!Failure::Timeout.retryable(&gateway));
        assert!(!Failure::Status(StatusCode::TOO_MANY_REQUESTS).counts_against());
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_in_flight() {
        let c = circuit(
            "{targetRef: {kind: Service, name: products}, retry: {attempts: 3, budgetPercent: 20}}",
        );
        let _requests: Vec<Counted> = (0..10).map(|_| c.start()).collect();
        let retries: Vec<Counted> = (0..5).filter_map(|_| c.take_retry()).collect();
        assert_eq!(retries.len(), 2, "20 % of 10");
        drop(retries);
        assert!(c.take_retry().is_some(), "returned retries free the budget");
    }

    #[test]
    fn a_lone_request_may_still_retry_unless_the_budget_is_zero() {
        let c = circuit("{targetRef: {kind: Service, name: products}, retry: {attempts: 3}}");
        let _r = c.start();
        assert!(c.take_retry().is_some());
        let none = circuit(
            "{targetRef: {kind: Service, name: products}, retry: {attempts: 3, budgetPercent: 0}}",
        );
        let _r = none.start();
        assert!(none.take_retry().is_none());
    }

    #[test]
    fn an_edit_that_leaves_the_breaker_alone_keeps_its_state() {
        let spec = |timeout: &str, open_for: &str| -> CircuitPolicySpec {
            serde_saphyr::from_str(&format!(
                "{{targetRef: {{kind: Service, name: products}}, timeout: {timeout}, circuitBreaker: {{consecutiveFailures: 1, openFor: {open_for}}}, bulkhead: {{maxConcurrent: 1}}}}"
            ))
            .unwrap()
        };
        let first = Circuit::new("p", &spec("1s", "30s"));
        let breaker = first.breaker.as_ref().unwrap();
        let now = std::time::Instant::now();
        let a = breaker.admit(now);
        breaker.record(a, false, now);
        let timeout_edit = Circuit::evolve("p", &spec("2s", "30s"), Some(&first));
        assert!(
            Arc::ptr_eq(timeout_edit.breaker.as_ref().unwrap(), breaker),
            "still open"
        );
        assert!(Arc::ptr_eq(
            timeout_edit.bulkhead.as_ref().unwrap(),
            first.bulkhead.as_ref().unwrap()
        ));
        let breaker_edit = Circuit::evolve("p", &spec("2s", "10s"), Some(&first));
        assert!(
            !Arc::ptr_eq(breaker_edit.breaker.as_ref().unwrap(), breaker),
            "new settings, new breaker"
        );
    }

    #[tokio::test]
    async fn the_bulkhead_queues_up_to_its_limit_and_refuses_beyond() {
        let c = circuit(
            "{targetRef: {kind: Service, name: products}, bulkhead: {maxConcurrent: 1, maxQueued: 1}}",
        );
        let bulkhead = c.bulkhead.as_ref().unwrap();
        let first = bulkhead.enter().await.expect("a slot");
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.bulkhead.as_ref().unwrap().enter().await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(bulkhead.enter().await.is_none(), "the queue is full");
        drop(first);
        assert!(waiting.await.unwrap(), "the queued call got the freed slot");
    }
}
