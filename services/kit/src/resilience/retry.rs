//! Retries: which failures are retried ([`Failure::retryable`]), which requests may be sent
//! twice ([`may_retry`]), and the budget that keeps retries from multiplying load on a
//! destination that is already failing ([`RetryBudget`]: retries in flight at most a share of
//! requests in flight, Envoy's retry budget).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{HeaderMap, Method, StatusCode};
use tienda_crds::circuit_policy::RetryOn;

use super::backoff::Backoff;

/// Retry settings, from a CircuitPolicy's `retry`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all.
    pub attempts: u32,
    /// The pause between attempts.
    pub backoff: Backoff,
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
    /// The destination answered with this status (5xx or 429).
    Status(StatusCode),
}

impl Failure {
    /// The failure a status is, if it is one: 5xx and 429.
    pub fn from_status(status: StatusCode) -> Option<Self> {
        (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
            .then_some(Self::Status(status))
    }

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
    /// 5xx answers; a 429 is the destination protecting itself, not failing.
    pub fn counts_against(self) -> bool {
        match self {
            Failure::Status(s) => s.is_server_error(),
            _ => true,
        }
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(s) if s.is_server_error() => "5xx",
            Failure::Status(_) => "429",
        }
    }
}

/// Whether a request may be sent twice: its method is idempotent (RFC 9110 §9.2.2) or it
/// carries an `Idempotency-Key`, which makes the destination answer a repeat with the first
/// answer.
pub fn may_retry(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// Requests and retries in flight to one destination.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    requests: AtomicUsize,
    retries: AtomicUsize,
}

impl RetryBudget {
    /// Retries in flight may be `percent` % of requests in flight (at least one); 0: none.
    pub fn new(percent: u32) -> Self {
        Self {
            percent,
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> Counted {
        self.requests.fetch_add(1, Ordering::AcqRel);
        Counted {
            budget: self.clone(),
            retry: false,
        }
    }

    /// Takes a retry from the budget if it has room; the guard gives it back.
    pub fn take_retry(self: &Arc<Self>) -> Option<Counted> {
        if self.percent == 0 {
            return None;
        }
        let requests = self.requests.load(Ordering::Acquire);
        let allowed = (requests * self.percent as usize / 100).max(1);
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
                        budget: self.clone(),
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
    budget: Arc<RetryBudget>,
    retry: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.budget.retries
        } else {
            &self.budget.requests
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Failure::from_status(StatusCode::OK), None);
        assert_eq!(Failure::from_status(StatusCode::NOT_FOUND), None);
        assert!(Failure::from_status(StatusCode::TOO_MANY_REQUESTS).is_some());
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_in_flight() {
        let budget = Arc::new(RetryBudget::new(20));
        let _requests: Vec<Counted> = (0..10).map(|_| budget.start()).collect();
        let retries: Vec<Counted> = (0..5).filter_map(|_| budget.take_retry()).collect();
        assert_eq!(retries.len(), 2, "20 % of 10");
        drop(retries);
        assert!(
            budget.take_retry().is_some(),
            "returned retries free the budget"
        );
    }

    #[test]
    fn a_lone_request_may_still_retry_unless_the_budget_is_zero() {
        let budget = Arc::new(RetryBudget::new(20));
        let _r = budget.start();
        assert!(budget.take_retry().is_some());
        let none = Arc::new(RetryBudget::new(0));
        let _r = none.start();
        assert!(none.take_retry().is_none());
    }
}
