//! What every Tienda service shares, so each service is its domain and nothing else.
//!
//! A service's `main` is three lines: parse its config (which flattens [`CommonConfig`]),
//! [`telemetry::init`], then `Application::build(config).await?.run_until_stopped().await`.
//! Its `build` starts a [`Platform`] — database pool with migrations applied under an advisory
//! lock, NATS with JetStream, metrics registry, readiness checks, shutdown signal — and hands
//! its API router to [`Application::build`], which adds `/livez`, `/readyz`, `/metrics`,
//! `/openapi.json`, request ids, trace spans, request metrics, a body limit and problem+json
//! fallbacks.
//!
//! # Layout
//! - [`app`]: [`Platform`] and [`Application`] (build / port / run_until_stopped)
//! - [`config`]: [`CommonConfig`], the flags and env vars every service takes
//! - [`telemetry`]: JSON logs with span fields
//! - [`metrics`]: Prometheus registry, HTTP request metrics, `/metrics`
//! - [`health`]: `/livez`, `/readyz` with critical and informational checks
//! - [`problem`]: RFC 9457 problem documents
//! - [`etag`]: strong ETags from row versions, `If-Match`/`If-None-Match`, 412 and 428
//! - [`constraint`]: database constraint violations turned into client problems
//! - [`jwt`]: access-token verification against auth's JWKS, `require_role` middleware
//! - [`json`]: a JSON extractor whose rejections are problems naming the field
//! - [`shutdown`]: SIGTERM/Ctrl-C and the drain deadline
//! - [`db`]: PostgreSQL pool and migrations
//! - [`nats`]: NATS connection and JetStream context
//! - [`console`]: the operations console (streams, dead letters, sagas, circuits, policies)
//! - [`consumer`]: durable pull consumers applied exactly once through the inbox
//! - [`consumer_config`]: which consumer to run and how (read by `consumer` and `dead_letter`)
//! - [`dead_letter`]: the dead-letter stream and its admin API
//! - [`idempotency`]: `Idempotency-Key` on unsafe routes: replays, conflicts, the sweeper
//! - [`outbox`]: `enqueue` in the caller's transaction, and the relay that publishes
//! - [`trace_context`]: W3C `traceparent` from request to outbox to consumer
//! - [`resilience`]: backoff, breaker, retries with a budget, bulkhead, deadline, outlier
//!   ejection — the pieces a CircuitPolicy is made of
//! - [`policy`]: RateLimitPolicy and CircuitPolicy compiled and kept live from files or the
//!   cluster, with `status.applied` reports
//! - [`outbound`]: the HTTP client for calls to other services and providers, applying the
//!   CircuitPolicy of each destination
//! - [`secret`]: values that never reach a log
//! - [`revocation`]: ended sessions, whose access tokens every verifier then refuses
//! - [`seal`]: secrets an event must carry, sealed with the shop's event-sealing keys
//! - [`serve`]: the HTTP server loop (header deadline and limits, graceful drain)
//! - `testing` (feature): a fresh database per test, test configuration

pub mod app;
pub mod config;
pub mod console;
pub mod constraint;
pub mod consumer;
pub mod consumer_config;
pub mod db;
pub mod dead_letter;
pub mod etag;
pub mod health;
pub mod idempotency;
pub mod json;
pub mod jwt;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod outbound;
pub mod outbox;
pub mod policy;
pub mod problem;
pub mod resilience;
pub mod revocation;
pub mod seal;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace_context;

pub use app::{Application, Needs, Platform};
pub use config::{CommonConfig, TokenConfig};
pub use problem::{FieldError, Problem};
pub use secret::Secret;
pub use shutdown::Shutdown;

/// Installs rustls' ring provider as the process default. Call first thing in every `main`
/// (and in test setup): with more than one provider compiled in, rustls cannot choose.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
