//! A call's deadline: one instant that every step of the call — waiting for a bulkhead slot,
//! each attempt, each backoff pause — is bounded by, so retries never stretch a call past the
//! time its caller was promised.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// When a call must be done by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

/// The deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the deadline passed")]
pub struct Elapsed;

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// At `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.0
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The timeout of one attempt: its own (`per_try`) when set and sooner, else what is left.
    pub fn attempt(&self, per_try: Option<Duration>) -> Duration {
        let left = self.remaining();
        per_try.map_or(left, |p| p.min(left))
    }

    /// Whether a pause of `pause` would still leave time for an attempt.
    pub fn allows(&self, pause: Duration) -> bool {
        self.remaining() > pause
    }

    /// Runs `future` until the deadline.
    pub async fn run<F: Future>(&self, future: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout_at(tokio::time::Instant::from_std(self.0), future)
            .await
            .map_err(|_| Elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_gets_its_own_timeout_only_when_it_is_sooner() {
        let d = Deadline::after(Duration::from_secs(2));
        assert_eq!(
            d.attempt(Some(Duration::from_millis(100))),
            Duration::from_millis(100)
        );
        assert!(d.attempt(Some(Duration::from_secs(60))) <= Duration::from_secs(2));
        assert!(d.attempt(None) <= Duration::from_secs(2));
        assert!(!d.allows(Duration::from_secs(3)));
    }

    #[test]
    fn a_passed_deadline_leaves_nothing() {
        let d = Deadline::at(Instant::now() - Duration::from_millis(1));
        assert!(d.expired());
        assert_eq!(d.remaining(), Duration::ZERO);
        assert_eq!(d.attempt(Some(Duration::from_secs(1))), Duration::ZERO);
    }

    #[tokio::test]
    async fn work_past_the_deadline_is_cut_off() {
        let d = Deadline::after(Duration::from_millis(20));
        let slow = d.run(tokio::time::sleep(Duration::from_secs(30))).await;
        assert_eq!(slow, Err(Elapsed));
        let quick = Deadline::after(Duration::from_secs(30))
            .run(async { 7 })
            .await;
        assert_eq!(quick, Ok(7));
    }
}
