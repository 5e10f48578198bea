//! Outlier ejection: an endpoint of a destination that fails `consecutiveErrors` times in a
//! row is taken out of rotation for a while — the base ejection time, doubled with each repeat
//! (Envoy's outlier detection), at most five minutes — and never more than
//! `maxEjectionPercent` of a destination's endpoints at once.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// Ejection settings, from a CircuitPolicy's `outlierDetection`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint.
    pub consecutive_errors: u32,
    /// First ejection time; doubles with each repeat (at most [`MAX_EJECTION`]).
    pub base_ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (at least one may be).
    pub max_ejection_percent: u32,
}

impl OutlierConfig {
    /// How many of `endpoints` may be ejected at once.
    pub fn allowed(&self, endpoints: usize) -> usize {
        if self.max_ejection_percent == 0 {
            0
        } else {
            (endpoints * self.max_ejection_percent as usize / 100).max(1)
        }
    }
}

/// Longest ejection, however often an endpoint misbehaves (Envoy's `max_ejection_time`).
pub const MAX_EJECTION: Duration = Duration::from_secs(300);

/// The ejection state of one endpoint.
#[derive(Debug, Default)]
pub struct Ejection {
    consecutive_errors: AtomicU32,
    /// How many times it has been ejected in a row (the ejection time doubles with each).
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

impl Ejection {
    /// Whether the endpoint is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| now < until)
    }

    /// Records a call's outcome. When it is the `consecutive_errors`-th failure in a row and
    /// `room()` says another endpoint may be ejected, ejects it and returns for how long.
    pub fn record(
        &self,
        ok: bool,
        config: Option<&OutlierConfig>,
        now: Instant,
        room: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        if ok {
            self.consecutive_errors.store(0, Ordering::Relaxed);
            // Behaving again after an ejection: the next ejection starts from the base time.
            if !self.is_ejected(now) {
                self.ejections.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let errors = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let config = config?;
        if errors < config.consecutive_errors || self.is_ejected(now) || !room() {
            return None;
        }
        let times = self.ejections.fetch_add(1, Ordering::Relaxed);
        let duration = config
            .base_ejection_time
            .saturating_mul(2u32.saturating_pow(times.min(16)))
            .min(MAX_EJECTION);
        *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + duration);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        Some(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_errors: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_doubling_time_and_success_resets_it() {
        let e = Ejection::default();
        let t = Instant::now();
        let cfg = config();
        assert_eq!(e.record(false, Some(&cfg), t, || true), None);
        assert_eq!(
            e.record(false, Some(&cfg), t, || true),
            Some(Duration::from_secs(10))
        );
        assert!(e.is_ejected(t + Duration::from_secs(9)));
        let back = t + Duration::from_secs(10);
        assert!(!e.is_ejected(back));
        e.record(false, Some(&cfg), back, || true);
        assert_eq!(
            e.record(false, Some(&cfg), back, || true),
            Some(Duration::from_secs(20)),
            "a repeat doubles"
        );
        let later = back + Duration::from_secs(20);
        e.record(true, Some(&cfg), later, || true);
        e.record(false, Some(&cfg), later, || true);
        assert_eq!(
            e.record(false, Some(&cfg), later, || true),
            Some(Duration::from_secs(10)),
            "behaving again restarts from the base time"
        );
    }

    #[test]
    fn no_room_or_no_policy_means_no_ejection() {
        let e = Ejection::default();
        let t = Instant::now();
        let cfg = config();
        e.record(false, Some(&cfg), t, || false);
        assert_eq!(e.record(false, Some(&cfg), t, || false), None);
        assert!(!e.is_ejected(t));
        assert_eq!(e.record(false, None, t, || true), None);
        assert_eq!(cfg.allowed(3), 1);
        assert_eq!(cfg.allowed(10), 5);
        assert_eq!(
            OutlierConfig {
                max_ejection_percent: 0,
                ..cfg
            }
            .allowed(10),
            0
        );
    }
}
