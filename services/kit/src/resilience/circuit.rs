//! A compiled CircuitPolicy: everything it asks of calls to one destination — the deadline,
//! retries (which failures, how many, backoff with full jitter, within a budget), the
//! [`Breaker`], the [`Bulkhead`], outlier ejection settings and the fallback answer. One
//! [`Circuit`] per destination; it is kept across policy reloads while its spec is unchanged,
//! and an edit keeps the breaker and bulkhead whose settings did not change.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use tienda_crds::circuit_policy::CircuitPolicySpec;

use super::{
    backoff::Backoff,
    breaker::{Breaker, BreakerConfig},
    bulkhead::Bulkhead,
    outlier::OutlierConfig,
    retry::{Counted, RetryBudget, RetryConfig},
};

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

/// Everything a CircuitPolicy asks of calls to one destination.
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
    /// Requests and retries in flight.
    budget: Arc<RetryBudget>,
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
        let retry = spec.retry.as_ref().map(|r| RetryConfig {
            attempts: count(r.attempts).max(1),
            backoff: Backoff::new(r.backoff.base.get(), r.backoff.max.get()),
            budget_percent: count(r.budget_percent),
            retry_on: r.retry_on.clone(),
            per_try_timeout: r.per_try_timeout.as_ref().map(|d| d.get()),
        });
        Self {
            policy: policy.to_owned(),
            spec: spec.clone(),
            timeout: spec.timeout.as_ref().map(|d| d.get()),
            budget: Arc::new(RetryBudget::new(
                retry.as_ref().map_or(0, |r| r.budget_percent),
            )),
            retry,
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
        }
    }

    /// Counts a request in flight (the retry budget's base) until the guard drops.
    pub fn start(&self) -> Counted {
        self.budget.start()
    }

    /// Takes a retry from the budget if it has room; the guard gives it back.
    pub fn take_retry(&self) -> Option<Counted> {
        self.retry.as_ref()?;
        self.budget.take_retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit(yaml: &str) -> Arc<Circuit> {
        let spec: CircuitPolicySpec = serde_saphyr::from_str(yaml).expect("spec parses");
        Arc::new(Circuit::new("p", &spec))
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_in_flight() {
        let c = circuit(
            "{targetRef: {kind: Service, name: products}, retry: {attempts: 3, budgetPercent: 20}}",
        );
        let _requests: Vec<Counted> = (0..10).map(|_| c.start()).collect();
        let retries: Vec<Counted> = (0..5).filter_map(|_| c.take_retry()).collect();
        assert_eq!(retries.len(), 2, "20 % of 10");
    }

    #[test]
    fn without_retry_settings_nothing_is_retried() {
        let c = circuit("{targetRef: {kind: Service, name: products}, timeout: 1s}");
        let _r = c.start();
        assert!(c.take_retry().is_none());
        assert_eq!(c.timeout, Some(Duration::from_secs(1)));
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
}
