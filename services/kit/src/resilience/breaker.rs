//! The circuit breaker of one destination, as a state machine over an explicit clock.
//!
//! Closed: calls pass; it opens after `consecutiveFailures` failures in a row, or when at least
//! `minRequests` calls in the sliding `window` failed at `failureRatio` or more. Open: calls are
//! refused for `openFor`. Half-open: `halfOpenRequests` probes pass; when all succeed it
//! closes, the first failure opens it again.
//!
//! Hand-written rather than taken from a crate: the crates (failsafe, tower's examples) have
//! no half-open probe count, no ratio over a time window, or no way to swap settings live.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Settings, from a CircuitPolicy's `circuitBreaker`.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Open when this fraction of the window's calls failed.
    pub failure_ratio: Option<f64>,
    /// Calls needed in the window before the ratio is judged.
    pub min_requests: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long it stays open.
    pub open_for: Duration,
    /// Probes let through when half-open.
    pub half_open_requests: u32,
}

/// The window is kept in this many buckets.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slot of time (`elapsed / bucket width`) the counts belong to.
    slot: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
enum State {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    buckets: [Bucket; BUCKETS],
}

/// What a caller learns when it asks to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call; report the outcome with [`Breaker::record`].
    Call,
    /// Call as a half-open probe; report the outcome with [`Breaker::record`] (`probe: true`).
    Probe,
    /// Refused; the breaker may let calls through after this long.
    Refused(Duration),
}

/// The breaker's state, as exported in metrics (`0` closed, `1` open, `2` half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Calls pass.
    Closed = 0,
    /// Calls are refused.
    Open = 1,
    /// Probes pass.
    HalfOpen = 2,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                state: State::Closed { consecutive: 0 },
                buckets: [Bucket::default(); BUCKETS],
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, now: Instant) -> u64 {
        let width = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.epoch).as_nanos() / width.as_nanos()) as u64
    }

    /// May a call go ahead at `now`?
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        if let State::Open { until } = inner.state {
            if now < until {
                return Admission::Refused(until - now);
            }
            inner.state = State::HalfOpen {
                admitted: 0,
                succeeded: 0,
            };
        }
        match &mut inner.state {
            State::Closed { .. } => Admission::Call,
            State::HalfOpen { admitted, .. } => {
                if *admitted < self.config.half_open_requests {
                    *admitted += 1;
                    Admission::Probe
                } else {
                    // Probes are out; the verdict comes within a call's time.
                    Admission::Refused(Duration::from_secs(1))
                }
            }
            State::Open { until } => Admission::Refused(until.saturating_duration_since(now)),
        }
    }

    /// Reports how an admitted call ended.
    pub fn record(&self, admission: Admission, ok: bool, now: Instant) {
        let slot = self.slot(now);
        let mut inner = self.lock();
        let open_for = self.config.open_for;
        match (&mut inner.state, admission) {
            (State::HalfOpen { succeeded, .. }, Admission::Probe) => {
                if !ok {
                    inner.state = State::Open {
                        until: now + open_for,
                    };
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_requests {
                        inner.state = State::Closed { consecutive: 0 };
                        inner.buckets = [Bucket::default(); BUCKETS];
                    }
                }
            }
            (State::Closed { consecutive }, Admission::Call) => {
                *consecutive = if ok { 0 } else { *consecutive + 1 };
                let consecutive = *consecutive;
                let bucket = &mut inner.buckets[(slot % BUCKETS as u64) as usize];
                if bucket.slot != slot {
                    *bucket = Bucket {
                        slot,
                        calls: 0,
                        failures: 0,
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(!ok);
                let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
                let (calls, failures) = inner
                    .buckets
                    .iter()
                    .filter(|b| b.slot >= oldest && b.slot <= slot)
                    .fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
                let by_count = self
                    .config
                    .consecutive_failures
                    .is_some_and(|n| consecutive >= n);
                let by_ratio = self.config.failure_ratio.is_some_and(|r| {
                    calls >= self.config.min_requests && f64::from(failures) >= r * f64::from(calls)
                });
                if !ok && (by_count || by_ratio) {
                    inner.state = State::Open {
                        until: now + open_for,
                    };
                }
            }
            // A call admitted before the state changed: its news is stale.
            _ => {}
        }
    }

    /// Gives back a probe whose call never finished (the client went away).
    pub fn abandon(&self, admission: Admission) {
        if admission == Admission::Probe
            && let State::HalfOpen { admitted, .. } = &mut self.lock().state
        {
            *admitted = admitted.saturating_sub(1);
        }
    }

    /// The phase at `now`.
    pub fn phase(&self, now: Instant) -> Phase {
        match self.lock().state {
            State::Closed { .. } => Phase::Closed,
            State::Open { until } if now < until => Phase::Open,
            State::Open { .. } | State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: Some(3),
            failure_ratio: None,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_requests: 2,
        }
    }

    fn call(b: &Breaker, ok: bool, now: Instant) -> Admission {
        let a = b.admit(now);
        if a != Admission::Call && a != Admission::Probe {
            return a;
        }
        b.record(a, ok, now);
        a
    }

    #[test]
    fn it_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let b = Breaker::new(config());
        let t = Instant::now();
        call(&b, false, t);
        call(&b, false, t);
        call(&b, true, t);
        call(&b, false, t);
        call(&b, false, t);
        assert_eq!(b.phase(t), Phase::Closed);
        call(&b, false, t);
        assert_eq!(b.phase(t), Phase::Open);
        assert_eq!(
            b.admit(t + Duration::from_secs(1)),
            Admission::Refused(Duration::from_secs(4))
        );
    }

    #[test]
    fn after_open_for_probes_pass_and_close_it_when_all_succeed() {
        let b = Breaker::new(config());
        let t = Instant::now();
        for _ in 0..3 {
            call(&b, false, t);
        }
        let later = t + Duration::from_secs(5);
        let first = b.admit(later);
        let second = b.admit(later);
        assert_eq!((first, second), (Admission::Probe, Admission::Probe));
        assert!(
            matches!(b.admit(later), Admission::Refused(_)),
            "only two probes"
        );
        b.record(first, true, later);
        assert_eq!(b.phase(later), Phase::HalfOpen);
        b.record(second, true, later);
        assert_eq!(b.phase(later), Phase::Closed);
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = Breaker::new(config());
        let t = Instant::now();
        for _ in 0..3 {
            call(&b, false, t);
        }
        let later = t + Duration::from_secs(6);
        let probe = b.admit(later);
        b.record(probe, false, later);
        assert_eq!(b.phase(later), Phase::Open);
        assert!(matches!(
            b.admit(later + Duration::from_secs(4)),
            Admission::Refused(_)
        ));
    }

    #[test]
    fn the_failure_ratio_needs_min_requests_in_the_window() {
        let b = Breaker::new(BreakerConfig {
            consecutive_failures: None,
            failure_ratio: Some(0.5),
            min_requests: 10,
            ..config()
        });
        let t = Instant::now();
        for i in 0..9 {
            call(&b, i % 2 == 0, t);
        }
        assert_eq!(b.phase(t), Phase::Closed, "9 calls are below min_requests");
        call(&b, false, t);
        assert_eq!(b.phase(t), Phase::Open, "5 of 10 failed");
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let b = Breaker::new(BreakerConfig {
            consecutive_failures: None,
            failure_ratio: Some(0.5),
            min_requests: 4,
            ..config()
        });
        let t = Instant::now();
        for _ in 0..3 {
            call(&b, false, t);
        }
        let later = t + Duration::from_secs(11);
        for _ in 0..3 {
            call(&b, true, later);
        }
        call(&b, false, later);
        assert_eq!(b.phase(later), Phase::Closed, "1 of 4 in the window failed");
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let b = Breaker::new(BreakerConfig {
            half_open_requests: 1,
            ..config()
        });
        let t = Instant::now();
        for _ in 0..3 {
            call(&b, false, t);
        }
        let later = t + Duration::from_secs(5);
        let probe = b.admit(later);
        b.abandon(probe);
        assert_eq!(b.admit(later), Admission::Probe);
    }
}
