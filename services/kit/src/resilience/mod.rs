//! Resilience for calls to other services and providers, one implementation for the whole
//! workspace: the gateway's proxy and every service's [`crate::outbound`] client apply a
//! CircuitPolicy through these pieces, and every retry loop (outbox relay, consumers, the
//! operator, `tienda up`'s supervisor) waits with [`Backoff`].
//!
//! Time-based pieces are state machines over an explicit clock (`now: Instant` arguments), so
//! their tests need no sleeping.
//!
//! # Layout
//! - [`backoff`]: exponential backoff with full jitter and a cap
//! - [`breaker`]: the circuit breaker (consecutive failures, failure ratio over a window,
//!   half-open probes)
//! - [`retry`]: which failures and requests are retried, and the retry budget
//! - [`bulkhead`]: bounded concurrency with a bounded queue
//! - [`deadline`]: one deadline for a whole call, retries included
//! - [`outlier`]: ejection of endpoints that fail in a row
//! - [`circuit`]: a CircuitPolicy compiled into the above

pub mod backoff;
pub mod breaker;
pub mod bulkhead;
pub mod circuit;
pub mod deadline;
pub mod outlier;
pub mod retry;

pub use backoff::Backoff;
pub use breaker::{Admission, Breaker, BreakerConfig, Phase};
pub use bulkhead::Bulkhead;
pub use circuit::{Circuit, FallbackConfig};
pub use deadline::Deadline;
pub use outlier::{Ejection, OutlierConfig};
pub use retry::{Failure, RetryBudget, RetryConfig, may_retry};
