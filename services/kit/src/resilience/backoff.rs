//! The one backoff of the workspace: exponential, capped, with full jitter (AWS's "Exponential
//! Backoff and Jitter": a uniformly random delay between zero and the capped exponential
//! ceiling). Full jitter spreads the retries of many callers that failed together, so a
//! recovering destination is not hit by synchronized waves.
//!
//! Used by the outbox relay, consumers, the outbound client, the gateway's retries, the
//! operator's per-object error requeue and `tienda up`'s supervisor.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` (from 1) waits a random time in
/// `[floor, min(base · 2^(n-1), max)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first attempt's delay.
    pub base: Duration,
    /// Largest ceiling, however many attempts failed.
    pub max: Duration,
    /// Smallest delay (a zero sleep would spin).
    pub floor: Duration,
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`, at least 1 ms.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            floor: Duration::from_millis(1),
        }
    }

    /// The same with another floor (a supervisor restarting a process waits at least this).
    pub const fn with_floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// The ceiling of attempt `attempt` (1-based; 0 counts as 1): `base · 2^(attempt-1)`,
    /// capped at `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)))
            .min(self.max)
            .max(self.floor)
    }

    /// The delay before retry number `attempt`, drawn uniformly up to its ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }

    /// The delay for a given draw `fraction` in `[0, 1)`: the pure part of [`Backoff::delay`].
    pub fn delay_with(&self, attempt: u32, fraction: f64) -> Duration {
        self.ceiling(attempt)
            .mul_f64(fraction.clamp(0.0, 1.0))
            .max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 2000 * MS);
        let ceilings: Vec<u128> = (1..=7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.ceiling(0), b.ceiling(1), "attempt 0 counts as the first");
        assert_eq!(b.ceiling(u32::MAX), 2000 * MS, "no overflow");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling_above_the_floor() {
        let b = Backoff::new(100 * MS, 2000 * MS);
        assert_eq!(b.delay_with(3, 0.0), MS, "the floor");
        assert_eq!(b.delay_with(3, 0.5), 200 * MS);
        assert_eq!(b.delay_with(3, 1.0), 400 * MS);
        for attempt in 1..40 {
            let d = b.delay(attempt);
            assert!(
                d >= MS && d <= b.ceiling(attempt),
                "attempt {attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn draws_differ_so_callers_that_failed_together_spread_out() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let draws: std::collections::BTreeSet<Duration> = (0..50).map(|_| b.delay(1)).collect();
        assert!(draws.len() > 40, "{} distinct of 50", draws.len());
    }

    #[test]
    fn a_floor_raises_short_delays() {
        let b = Backoff::new(10 * MS, 100 * MS).with_floor(50 * MS);
        assert_eq!(b.delay_with(1, 0.0), 50 * MS);
        assert_eq!(b.ceiling(1), 50 * MS);
        assert_eq!(b.ceiling(4), 80 * MS);
    }
}
