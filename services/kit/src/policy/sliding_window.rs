//! The sliding-window counter (Cloudflare's "approximating sliding windows"): per key, the
//! count of the current fixed window plus the previous window's count weighted by how much of
//! it still overlaps the sliding window. Two integers per key, no timestamps per request, and
//! no burst beyond the limit at a window boundary (the flaw of plain fixed windows).
//!
//! Written here because governor (our token bucket) implements GCRA only, and the crates that
//! offer sliding windows keep a timestamp per request or lack keyed state.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// One key's two windows.
#[derive(Debug, Clone, Copy)]
struct Windows {
    /// Start of the current fixed window.
    start: Instant,
    /// Requests counted in the previous window.
    previous: u64,
    /// Requests counted in the current window.
    current: u64,
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; this many requests remain before the limit.
    Allowed {
        /// Requests left in the sliding window.
        remaining: u64,
    },
    /// Over the limit; try again after this long.
    Limited {
        /// When a request would be allowed again.
        retry_after: Duration,
    },
}

/// A keyed sliding-window counter: `limit` requests per `period` for each key.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: u64,
    period: Duration,
    keys: DashMap<u64, Windows>,
}

impl SlidingWindow {
    /// `limit` requests per `period` (period > 0, limit ≥ 1).
    pub fn new(limit: u64, period: Duration) -> Self {
        Self {
            limit: limit.max(1),
            period: period.max(Duration::from_millis(1)),
            keys: DashMap::new(),
        }
    }

    /// Counts a request for `key` at `now` if the window has room.
    pub fn check(&self, key: u64, now: Instant) -> Verdict {
        let mut entry = self.keys.entry(key).or_insert(Windows {
            start: now,
            previous: 0,
            current: 0,
        });
        let w = entry.value_mut();
        let elapsed = now.saturating_duration_since(w.start);
        if elapsed >= self.period * 2 {
            *w = Windows {
                start: now,
                previous: 0,
                current: 0,
            };
        } else if elapsed >= self.period {
            *w = Windows {
                start: w.start + self.period,
                previous: w.current,
                current: 0,
            };
        }
        let into = now.saturating_duration_since(w.start).as_secs_f64() / self.period.as_secs_f64();
        let estimate = w.previous as f64 * (1.0 - into) + w.current as f64;
        if estimate + 1.0 <= self.limit as f64 {
            w.current += 1;
            let remaining = (self.limit as f64 - estimate - 1.0).floor().max(0.0) as u64;
            return Verdict::Allowed { remaining };
        }
        // When will `previous * (1 - t) + current + 1 <= limit` hold again?
        let retry_after = if w.current + 1 > self.limit || w.previous == 0 {
            // Not before this window ends and the next one's weight of it fades enough.
            let rest = self
                .period
                .saturating_sub(now.saturating_duration_since(w.start));
            let next_fraction =
                1.0 - (self.limit.saturating_sub(1) as f64 / w.current.max(1) as f64);
            rest + self.period.mul_f64(next_fraction.clamp(0.0, 1.0))
        } else {
            let needed = 1.0 - (self.limit as f64 - 1.0 - w.current as f64) / w.previous as f64;
            let at = self.period.mul_f64(needed.clamp(0.0, 1.0));
            at.saturating_sub(now.saturating_duration_since(w.start))
        };
        Verdict::Limited {
            retry_after: retry_after.max(Duration::from_millis(1)),
        }
    }

    /// Drops keys idle for two periods (their counts no longer matter).
    pub fn forget_idle(&self, now: Instant) {
        let period = self.period;
        self.keys
            .retain(|_, w| now.saturating_duration_since(w.start) < period * 2);
    }

    /// Keys tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(v: Verdict) -> bool {
        matches!(v, Verdict::Allowed { .. })
    }

    #[test]
    fn the_limit_holds_within_a_window_and_per_key() {
        let w = SlidingWindow::new(3, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(w.check(1, t), Verdict::Allowed { remaining: 2 });
        assert_eq!(w.check(1, t), Verdict::Allowed { remaining: 1 });
        assert_eq!(w.check(1, t), Verdict::Allowed { remaining: 0 });
        assert!(!allowed(w.check(1, t)));
        assert!(allowed(w.check(2, t)), "keys are counted apart");
    }

    #[test]
    fn the_previous_window_weighs_in_so_a_boundary_allows_no_double_burst() {
        let period = Duration::from_secs(10);
        let w = SlidingWindow::new(10, period);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(allowed(w.check(3, t)));
        }
        // Just after the boundary the previous window still counts almost fully.
        let after = t + period + Duration::from_millis(100);
        assert!(!allowed(w.check(3, after)));
        // Halfway through the next window half of it has faded: 5 more fit.
        let half = t + period + period / 2;
        let passed = (0..10).filter(|_| allowed(w.check(3, half))).count();
        assert_eq!(passed, 5);
        // Two idle periods later the key starts over.
        assert!(allowed(w.check(3, t + period * 4)));
    }

    #[test]
    fn retry_after_points_at_when_a_request_fits_again() {
        let period = Duration::from_secs(10);
        let w = SlidingWindow::new(10, period);
        let t = Instant::now();
        for _ in 0..10 {
            w.check(3, t);
        }
        let Verdict::Limited { retry_after } = w.check(3, t + Duration::from_secs(1)) else {
            panic!("limited")
        };
        assert!(allowed(w.check(
            3,
            t + Duration::from_secs(1) + retry_after + Duration::from_millis(5)
        )));
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let w = SlidingWindow::new(1, Duration::from_secs(1));
        let t = Instant::now();
        w.check(1, t);
        w.check(2, t + Duration::from_millis(1500));
        w.forget_idle(t + Duration::from_millis(2100));
        assert_eq!(w.len(), 1);
    }
}
