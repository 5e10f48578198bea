//! `Idempotency-Key` for unsafe requests that create things (IETF
//! draft-ietf-httpapi-idempotency-key-header): a client that retries a POST with the same key
//! gets the first answer again instead of a second order, payment or reservation.
//!
//! A service makes one [`Store`] ([`Store::start`], which also starts the sweeper on its
//! [`Platform`]) and adds [`layer`] to the routes that take a key, inside authentication so the
//! caller is known: `.route_layer(idempotency::layer(store, Options::optional()))` called
//! before (so wrapped by) the `require_role` route layer. Handlers do not change.
//!
//! # What a request gets
//! - `GET`, `HEAD`, `OPTIONS` and other safe methods: passed through untouched.
//! - No key: the handler runs as if the layer were not there (no body read, no database round
//!   trip) — unless the route requires one ([`Options::required`]): 400 `idempotency-key-missing`.
//! - A key that is empty, longer than [`MAX_KEY_CHARS`] characters, not visible ASCII, or sent
//!   twice: 400 `idempotency-key-invalid`. The value may be a Structured Field string
//!   (`"abc"`, as the draft writes it) or bare (`abc`, as Stripe's clients send it).
//! - A new key: the handler runs; its answer is stored with a fingerprint of the request.
//! - The same key and the same request (SHA-256 of method, path and query, and body): the stored
//!   answer — status, body, `Content-Type`, `Location`, `ETag` and the headers
//!   [`Options::headers`] lists — with `Idempotent-Replayed: true`. The handler does not run.
//! - The same key with another request: 422 `idempotency-key-reused`; use a new key.
//! - The same key while the first request is still running: 409 `idempotency-key-in-use` with
//!   `Retry-After`.
//!
//! # Scope
//! A key belongs to a caller and an endpoint: the record is keyed by (caller, method, path,
//! key), so two users, or one user on two endpoints, never collide. The path is the concrete
//! one (`/v1/orders/1/pay` and `/v1/orders/2/pay` are two endpoints). The caller is a [`Scope`]
//! an earlier layer put in the request's extensions (a guest cart token, say), else the verified
//! token's subject (`user:<sub>`, from [`Claims`]), else `anonymous`.
//!
//! # Across replicas
//! The in-flight claim is a row in `tienda_idempotency`, not process memory: the first request
//! inserts it (`INSERT .. ON CONFLICT`), every other request on any replica finds it. A claim has
//! a lease (`locked_until`, [`StoreConfig::lease`]) that the owner renews while its handler
//! runs; if the process dies mid-request, the lease runs out and the next retry with the same
//! request takes the claim over and runs the handler (a retry before then gets 409). A request
//! cancelled while it is claiming (between the insert and its answer) leaves its claim to the
//! lease the same way.
//!
//! # What is stored, what is not
//! - 2xx, 3xx and 4xx answers are stored and replayed (as Stripe does: a 422 for a bad body
//!   stays a 422), except 408, 409 and 429, which say "try again later": the claim is deleted.
//! - 5xx answers, a handler that panics, and a request cancelled mid-way (the client hung up)
//!   store nothing: the claim is deleted, so a retry runs the handler again. A 5xx may have
//!   come after the handler's transaction committed; see below.
//! - Answers over [`StoreConfig::max_response_bytes`] are sent but not stored (the claim is
//!   deleted, a warning logged): keep creation answers small, or raise the cap.
//! - Request bodies are read into memory only on routes with this layer and only when a key
//!   is sent, up to [`StoreConfig::max_request_bytes`] (413 above it).
//! - Records are kept [`StoreConfig::retention`] (24 h) from their first request, then deleted
//!   by the sweeper in batches; an expired record's key can be used afresh.
//!
//! # The window this cannot close
//! The handler's transaction and the stored answer are two commits. If the process dies (or
//! the database becomes unreachable) after the handler committed and before the answer is
//! stored, a retry runs the handler again once the lease has run out; after a handler that
//! committed and then answered 5xx, or an answer too large to store, a retry runs it again at
//! once. Domain code closes that window with its own unique constraint on a
//! client-chosen id (an order's checkout id, a reservation's `reservation_id`, a payment's
//! order id): the second run then finds the first one's row and answers with it. Every
//! endpoint that requires a key should have such an id; the key then saves the work and gives
//! the exact first answer, and the constraint guarantees the effect happens once.

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prometheus::{IntCounterVec, Opts, Registry};
use sqlx::{FromRow, PgPool};
use tower::{Layer, Service};
use uuid::Uuid;

use crate::{app::Platform, jwt::Claims, problem::Problem, shutdown::Shutdown};

/// The request header carrying the key.
pub const KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header marking a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// Headers stored with every answer (besides those a route lists in [`Options::headers`]).
const STORED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// Longest path of a keyed request: the path is part of the record's key, and an index entry
/// has a size limit (PostgreSQL's btree, ~2.7 kB).
const MAX_PATH_BYTES: usize = 1024;

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long a record is kept after its first request (default 24 h, as the design says).
    pub retention: Duration,
    /// How long a claim stays locked without a renewal (default 60 s); the owner renews it every
    /// sixth of this while its handler runs, so five renewals in a row must fail (a database
    /// too busy to lend a connection) before another replica may take over a running request.
    /// After a crash, retries get 409 for up to this long.
    pub lease: Duration,
    /// Largest request body read on a keyed request, in bytes (default 1 MiB, the platform's
    /// default body limit); above it the answer is 413.
    pub max_request_bytes: usize,
    /// Largest answer body stored, in bytes (default 256 KiB); larger answers are sent, not
    /// stored.
    pub max_response_bytes: usize,
    /// How often the sweeper looks for expired records (default 1 min).
    pub sweep_interval: Duration,
    /// Records deleted per sweep statement (default 1000), so a sweep never holds many locks.
    pub sweep_batch: i64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 256 * 1024,
            sweep_interval: Duration::from_secs(60),
            sweep_batch: 1000,
        }
    }
}

/// What a route asks of the layer.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Whether a request without a key is refused (400) instead of run without protection.
    pub required: bool,
    /// Headers of the first answer to store and replay besides `Content-Type`, `Location` and
    /// `ETag`.
    pub headers: Vec<HeaderName>,
}

impl Options {
    /// A key is accepted; requests without one run unprotected.
    pub fn optional() -> Self {
        Self::default()
    }

    /// A key is required (checkout, payments).
    pub fn required() -> Self {
        Self {
            required: true,
            ..Self::default()
        }
    }

    /// Also stores and replays `name`.
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.headers.push(name);
        self
    }
}

/// The caller's identity for key scoping, for callers without a token: a layer before this one
/// inserts it into the request's extensions (e.g. from a guest cart token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(pub String);

/// Where records live. Cheap to clone; make one per process ([`Store::start`]) and share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    pool: PgPool,
    config: StoreConfig,
    outcomes: IntCounterVec,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// One record's identity.
#[derive(Debug, Clone)]
struct RecordKey {
    scope: String,
    method: String,
    path: String,
    key: String,
}

/// What the claim found.
enum Claimed {
    /// This request owns the record and runs the handler; `reclaimed` when it took over an
    /// abandoned or expired record.
    Owned { claim: Uuid, reclaimed: bool },
    /// The first request's answer.
    Stored(Stored),
    /// The first request is still running.
    Running,
    /// The key was used for another request.
    Mismatch,
}

/// A stored answer.
#[derive(Debug, FromRow)]
struct Stored {
    status: i16,
    headers: sqlx::types::Json<Vec<(String, String)>>,
    body: Vec<u8>,
}

#[derive(Debug, FromRow)]
struct Found {
    fingerprint: Vec<u8>,
    status: Option<i16>,
    headers: Option<sqlx::types::Json<Vec<(String, String)>>>,
    body: Option<Vec<u8>>,
}

impl Store {
    /// A store on `pool`, counting outcomes in `registry`
    /// (`idempotency_requests_total{outcome}`). Does not sweep; see [`Store::start`].
    pub fn new(pool: PgPool, config: StoreConfig, registry: &Registry) -> Self {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "idempotency_requests_total",
                "Requests with an Idempotency-Key, by outcome: executed, replayed, in_flight, \
                 mismatched, reclaimed, not_stored",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        if let Err(err) = registry.register(Box::new(outcomes.clone())) {
            tracing::warn!(error = %err, "idempotency metrics not registered (a second Store?)");
        }
        Self {
            inner: Arc::new(StoreInner {
                pool,
                config,
                outcomes,
            }),
        }
    }

    /// A store on the platform's database and registry, with its sweeper running until
    /// shutdown.
    /// Keyed bodies are read up to the platform's `MAX_BODY_BYTES` (the limit every other
    /// request of the service has), not the config's default.
    pub fn start(platform: &Platform, mut config: StoreConfig) -> Self {
        config.max_request_bytes = platform.config.max_body_bytes;
        let store = Self::new(platform.db().clone(), config, &platform.metrics.registry);
        platform.spawn(store.clone().sweep_until(platform.shutdown.clone()));
        store
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Deletes up to one batch of records past the retention period (never a running claim);
    /// returns how many.
    pub async fn sweep(&self) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(
            "DELETE FROM tienda_idempotency WHERE (scope, method, path, key) IN ( \
                 SELECT scope, method, path, key FROM tienda_idempotency \
                 WHERE created_at < now() - make_interval(secs => $1) \
                   AND (locked_until IS NULL OR locked_until < now()) \
                 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(self.inner.config.retention.as_secs_f64())
        .bind(self.inner.config.sweep_batch)
        .execute(&self.inner.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// Sweeps every `sweep_interval`, batch after batch while batches come back full, until
    /// `shutdown`.
    async fn sweep_until(self, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.inner.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.wait() => return,
            }
            let mut total = 0;
            while !shutdown.is_triggered() {
                match self.sweep().await {
                    Ok(n) => {
                        total += n;
                        if (n as i64) < self.inner.config.sweep_batch {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "idempotency sweep failed");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::debug!(deleted = total, "expired idempotency records deleted");
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.inner.outcomes.with_label_values(&[outcome]).inc();
    }

    /// Claims the record, or says what holds it. A record is taken over when it is not running
    /// (stored, or its lease ran out) and either expired or an abandoned claim of this same
    /// request. The row is re-read when the claim fails; a row deleted in between (its owner
    /// released it) means trying again.
    async fn claim(&self, record: &RecordKey, fingerprint: &[u8]) -> Result<Claimed, sqlx::Error> {
        let config = &self.inner.config;
        for _ in 0..3 {
            let claim = Uuid::now_v7();
            let claimed: Option<bool> = sqlx::query_scalar(
                "INSERT INTO tienda_idempotency AS r \
                     (scope, method, path, key, fingerprint, claim, locked_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) \
                 ON CONFLICT (scope, method, path, key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, claim = EXCLUDED.claim, \
                     locked_until = EXCLUDED.locked_until, status = NULL, headers = NULL, \
                     body = NULL, created_at = now(), completed_at = NULL \
                 WHERE (r.status IS NOT NULL OR r.locked_until < now()) \
                   AND (r.created_at < now() - make_interval(secs => $8) \
                        OR (r.status IS NULL AND r.fingerprint = EXCLUDED.fingerprint)) \
                 RETURNING xmax::text <> '0'",
            )
            .bind(&record.scope)
            .bind(&record.method)
            .bind(&record.path)
            .bind(&record.key)
            .bind(fingerprint)
            .bind(claim)
            .bind(config.lease.as_secs_f64())
            .bind(config.retention.as_secs_f64())
            .fetch_optional(&self.inner.pool)
            .await?;
            if let Some(reclaimed) = claimed {
                return Ok(Claimed::Owned { claim, reclaimed });
            }
            let found: Option<Found> = sqlx::query_as(
                "SELECT fingerprint, status, headers, body FROM tienda_idempotency \
                 WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4",
            )
            .bind(&record.scope)
            .bind(&record.method)
            .bind(&record.path)
            .bind(&record.key)
            .fetch_optional(&self.inner.pool)
            .await?;
            let Some(found) = found else { continue };
            if found.fingerprint != fingerprint {
                return Ok(Claimed::Mismatch);
            }
            return Ok(match (found.status, found.headers, found.body) {
                (Some(status), Some(headers), Some(body)) => Claimed::Stored(Stored {
                    status,
                    headers,
                    body,
                }),
                _ => Claimed::Running,
            });
        }
        // Released three times in a row under our feet: someone is retrying hard.
        Ok(Claimed::Running)
    }
}

/// The layer for a route: see the module documentation.
pub fn layer(store: Store, options: Options) -> IdempotencyLayer {
    IdempotencyLayer {
        guard: Arc::new(Guard { store, options }),
    }
}

/// A [`tower::Layer`] adding idempotency keys to the routes it wraps; made by [`layer`].
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    guard: Arc<Guard>,
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotent {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// A service answering retries from the store; made by [`IdempotencyLayer`].
#[derive(Clone, Debug)]
pub struct Idempotent<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Service<Request> for Idempotent<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service that was polled ready runs this request; the clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move { Ok(guard.handle(request, inner).await) })
    }
}

impl Guard {
    /// Runs [`Guard::execute`] in a task of its own: a client that hangs up (the very reason
    /// keys are retried) drops the connection's future, and with it anything running inside
    /// it. The handler's answer must be stored, or its claim released, whatever the client
    /// does; a panic in the handler is raised again here, after the claim is released.
    async fn execute_detached<S>(
        self: Arc<Self>,
        owner: Owner,
        inner: S,
        request: Request,
    ) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
    {
        // A task of its own, so a client hanging up does not cancel work half done; it keeps
        // the request's trace (task-locals do not cross `spawn`).
        let work = async move { self.execute(owner, inner, request).await };
        let task = match crate::trace_context::TraceContext::current() {
            Some(context) => tokio::spawn(context.scope(work)),
            None => tokio::spawn(work),
        };
        match task.await {
            Ok(response) => response,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Problem::unavailable("The service is shutting down; retry the request.")
                .into_response(),
        }
    }
}

#[derive(Debug)]
struct Guard {
    store: Store,
    options: Options,
}

impl Guard {
    async fn handle<S>(self: Arc<Self>, request: Request, mut inner: S) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
    {
        if request.method().is_safe() {
            return run(&mut inner, request).await;
        }
        let key = match key_of(request.headers()) {
            Ok(Some(key)) => key,
            Ok(None) if !self.options.required => return run(&mut inner, request).await,
            Ok(None) => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency-key-missing",
                    "An Idempotency-Key is required",
                )
                .with_detail(
                    "Send an Idempotency-Key header with a new unique value (a UUID) for this \
                     request, and the same value when you retry it.",
                )
                .into_response();
            }
            Err(problem) => return problem.into_response(),
        };
        if request.uri().path().len() > MAX_PATH_BYTES {
            return Problem::new(
                StatusCode::URI_TOO_LONG,
                "uri-too-long",
                "The path is too long",
            )
            .with_detail(format!(
                "Paths of requests with an Idempotency-Key are limited to {MAX_PATH_BYTES} bytes."
            ))
            .into_response();
        }
        let scope = scope_of(&request);
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.store.inner.config.max_request_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Request body too large",
                )
                .with_detail(format!(
                    "The body must be at most {} bytes.",
                    self.store.inner.config.max_request_bytes
                ))
                .into_response();
            }
            Err(err) => {
                return Problem::bad_request(format!("The body could not be read: {err}"))
                    .into_response();
            }
        };
        let record = RecordKey {
            scope,
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            key,
        };
        let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
        let request = Request::from_parts(parts, Body::from(body));

        let claimed = match self.store.claim(&record, &fingerprint).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::error!(error = %err, "idempotency record could not be claimed");
                return Problem::unavailable(
                    "The request could not be checked against earlier ones; retry it with the \
                     same Idempotency-Key.",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                .into_response();
            }
        };
        match claimed {
            Claimed::Owned { claim, reclaimed } => {
                if reclaimed {
                    self.store.count("reclaimed");
                }
                let owner = Owner {
                    store: self.store.clone(),
                    record,
                    claim,
                    settled: false,
                };
                self.execute_detached(owner, inner, request).await
            }
            Claimed::Stored(stored) => {
                self.store.count("replayed");
                replay(stored)
            }
            Claimed::Running => {
                self.store.count("in_flight");
                Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency-key-in-use",
                    "A request with this Idempotency-Key is still being processed",
                )
                .with_detail("Retry after the first request has been answered.")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                .into_response()
            }
            Claimed::Mismatch => {
                self.store.count("mismatched");
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "The Idempotency-Key was used for another request",
                )
                .with_detail(
                    "This key was sent with a different method, path or body. Use a new \
                     Idempotency-Key for a new request; reuse a key only to retry the same \
                     request.",
                )
                .into_response()
            }
        }
    }

    /// Runs the handler while renewing the lease, then stores its answer or releases the claim.
    async fn execute<S>(&self, mut owner: Owner, mut inner: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        let handler = AssertUnwindSafe(run(&mut inner, request)).catch_unwind();
        let response = tokio::select! {
            biased;
            response = handler => response,
            never = owner.renew_while_running() => match never {},
        };
        let response = match response {
            Ok(response) => response,
            Err(panic) => {
                // Released before the panic goes on to the catch-panic layer (which answers
                // 500), so the client's retry finds the key free.
                self.store.count("not_stored");
                owner.release().await;
                std::panic::resume_unwind(panic);
            }
        };
        let status = response.status();
        if !is_stored(status) {
            self.store.count("not_stored");
            owner.release().await;
            return response;
        }
        let (parts, body) = response.into_parts();
        match read_capped(body, self.store.inner.config.max_response_bytes).await {
            Ok(Captured::Whole(bytes)) => {
                let headers = self.headers_to_store(&parts.headers);
                owner.complete(status, &headers, &bytes).await;
                self.store.count("executed");
                Response::from_parts(parts, Body::from(bytes))
            }
            Ok(Captured::TooLarge(body)) => {
                tracing::warn!(
                    path = %owner.record.path,
                    limit = self.store.inner.config.max_response_bytes,
                    "answer too large to store for Idempotency-Key replays; retries will run again"
                );
                self.store.count("not_stored");
                owner.release().await;
                Response::from_parts(parts, body)
            }
            Err(err) => {
                tracing::error!(error = %err, "reading the handler's answer failed");
                self.store.count("not_stored");
                owner.release().await;
                Problem::internal().into_response()
            }
        }
    }

    fn headers_to_store(&self, headers: &HeaderMap) -> Vec<(String, String)> {
        STORED_HEADERS
            .iter()
            .chain(&self.options.headers)
            .flat_map(|name| {
                headers.get_all(name).iter().filter_map(move |value| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
            })
            .collect()
    }
}

/// A claim this request holds. Dropped unsettled (panic, cancellation), it is released in the
/// background so a retry can run.
struct Owner {
    store: Store,
    record: RecordKey,
    claim: Uuid,
    settled: bool,
}

impl Owner {
    /// Extends the lease every sixth of it, forever (the caller stops polling when the handler
    /// answers). Losing the claim (the lease ran out, e.g. the database was unreachable, and
    /// another request took over) is logged; renewals stop.
    async fn renew_while_running(&self) -> Infallible {
        let lease = self.store.inner.config.lease;
        let mut lost = false;
        loop {
            tokio::time::sleep(lease / 6).await;
            if lost {
                continue;
            }
            let renewed = sqlx::query(
                "UPDATE tienda_idempotency SET locked_until = now() + make_interval(secs => $6) \
                 WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND claim = $5 \
                   AND status IS NULL",
            )
            .bind(&self.record.scope)
            .bind(&self.record.method)
            .bind(&self.record.path)
            .bind(&self.record.key)
            .bind(self.claim)
            .bind(lease.as_secs_f64())
            .execute(&self.store.inner.pool)
            .await;
            match renewed {
                Ok(done) if done.rows_affected() == 0 => {
                    tracing::warn!(path = %self.record.path, "idempotency claim lost while its handler ran");
                    lost = true;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "renewing an idempotency claim failed"),
            }
        }
    }

    /// Stores the answer. If that fails the claim stays until its lease runs out.
    async fn complete(&mut self, status: StatusCode, headers: &[(String, String)], body: &[u8]) {
        self.settled = true;
        let stored = sqlx::query(
            "UPDATE tienda_idempotency \
             SET status = $6, headers = $7, body = $8, locked_until = NULL, completed_at = now() \
             WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND claim = $5 \
               AND status IS NULL",
        )
        .bind(&self.record.scope)
        .bind(&self.record.method)
        .bind(&self.record.path)
        .bind(&self.record.key)
        .bind(self.claim)
        .bind(status.as_u16() as i16)
        .bind(sqlx::types::Json(headers))
        .bind(body)
        .execute(&self.store.inner.pool)
        .await;
        match stored {
            Ok(done) if done.rows_affected() == 0 => {
                tracing::warn!(path = %self.record.path, "idempotency claim lost before its answer was stored");
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "storing an idempotent answer failed"),
        }
    }

    /// Deletes the claim so a retry runs the handler again.
    async fn release(&mut self) {
        self.settled = true;
        if let Err(err) = delete_claim(&self.store, &self.record, self.claim).await {
            tracing::warn!(error = %err, "releasing an idempotency claim failed; it expires with its lease");
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.store.count("not_stored");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, record, claim) = (self.store.clone(), self.record.clone(), self.claim);
        runtime.spawn(async move {
            if let Err(err) = delete_claim(&store, &record, claim).await {
                tracing::warn!(error = %err, "releasing an abandoned idempotency claim failed; it expires with its lease");
            }
        });
    }
}

async fn delete_claim(store: &Store, record: &RecordKey, claim: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM tienda_idempotency \
         WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND claim = $5 \
           AND status IS NULL",
    )
    .bind(&record.scope)
    .bind(&record.method)
    .bind(&record.path)
    .bind(&record.key)
    .bind(claim)
    .execute(&store.inner.pool)
    .await?;
    Ok(())
}

async fn run<S>(inner: &mut S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Whether an answer with `status` is stored: not 5xx, and not the "try again later" 4xx.
fn is_stored(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS)
}

/// The replayed answer.
fn replay(stored: Stored) -> Response {
    let status = u16::try_from(stored.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in stored.headers.0 {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// The caller: a [`Scope`] extension, else the token's subject, else anonymous.
fn scope_of(request: &Request) -> String {
    if let Some(Scope(scope)) = request.extensions().get::<Scope>() {
        return scope.clone();
    }
    match request.extensions().get::<Claims>() {
        Some(claims) => format!("user:{}", claims.sub),
        None => "anonymous".to_owned(),
    }
}

/// SHA-256 of the method, the path and query, and the body: what a retry must repeat.
pub fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(method.as_str().as_bytes());
    context.update(b"\0");
    context.update(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    context.update(b"\0");
    context.update(body);
    context.finish().as_ref().to_vec()
}

fn invalid_key(detail: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "idempotency-key-invalid",
        "The Idempotency-Key is malformed",
    )
    .with_detail(format!(
        "The Idempotency-Key {detail}; send one key of 1 to {MAX_KEY_CHARS} visible ASCII \
         characters, such as a UUID."
    ))
}

/// The key, if sent: a Structured Field string (`"abc"`) or a bare value (`abc`), decoded as
/// the layer decodes it (handlers that record the key use this, so both agree).
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid_key("header was sent more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid_key("is not visible ASCII"))?
        .trim();
    let key = match text.strip_prefix('"') {
        Some(quoted) => structured_string(quoted)?,
        None => text.to_owned(),
    };
    if key.is_empty() {
        return Err(invalid_key("is empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(invalid_key(&format!(
            "is longer than {MAX_KEY_CHARS} characters"
        )));
    }
    if key.chars().any(|c| !(' '..='~').contains(&c)) {
        return Err(invalid_key("is not visible ASCII"));
    }
    Ok(Some(key))
}

/// The rest of an RFC 8941 sf-string after its opening quote (no parameters).
fn structured_string(quoted: &str) -> Result<String, Problem> {
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err(invalid_key("has an invalid escape in its quoted string")),
            },
            '"' if chars.as_str().is_empty() => return Ok(out),
            '"' => return Err(invalid_key("has text after its quoted string")),
            c => out.push(c),
        }
    }
    Err(invalid_key("has an unterminated quoted string"))
}

enum Captured {
    /// The whole body, within the cap.
    Whole(Bytes),
    /// Over the cap: what was read followed by the rest, for the client.
    TooLarge(Body),
}

/// Reads `body` up to `cap` bytes; past that, hands back a body that still yields all of it.
async fn read_capped(mut body: Body, cap: usize) -> Result<Captured, axum::Error> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        total += data.len();
        chunks.push(data);
        if total > cap {
            let read = futures::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
            return Ok(Captured::TooLarge(Body::from_stream(
                read.chain(body.into_data_stream()),
            )));
        }
    }
    Ok(Captured::Whole(match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<Option<String>, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert(KEY, HeaderValue::from_str(value).unwrap());
        key_of(&headers)
    }

    #[test]
    fn keys_are_read_bare_or_as_structured_field_strings() {
        assert_eq!(key("abc-1").unwrap().as_deref(), Some("abc-1"));
        assert_eq!(key("\"abc-1\"").unwrap().as_deref(), Some("abc-1"));
        assert_eq!(key(r#""a\"b\\c""#).unwrap().as_deref(), Some(r#"a"b\c"#));
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn empty_long_unterminated_and_repeated_keys_are_refused() {
        for bad in ["", "\"\"", "\"abc", "\"a\"b", r#""a\x""#] {
            let problem = key(bad).unwrap_err();
            assert_eq!(problem.status, 400, "{bad:?}");
            assert!(problem.problem_type.ends_with("idempotency-key-invalid"));
        }
        assert!(key(&"k".repeat(MAX_KEY_CHARS)).is_ok());
        assert!(key(&"k".repeat(MAX_KEY_CHARS + 1)).is_err());
        let mut twice = HeaderMap::new();
        twice.append(KEY, HeaderValue::from_static("a"));
        twice.append(KEY, HeaderValue::from_static("a"));
        assert!(key_of(&twice).is_err());
    }

    #[test]
    fn server_errors_and_try_again_answers_are_not_stored() {
        for status in [500, 502, 503, 408, 409, 429] {
            assert!(
                !is_stored(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 201, 204, 303, 400, 404, 422] {
            assert!(is_stored(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let uri: Uri = "/v1/orders?x=1".parse().unwrap();
        let base = fingerprint(&Method::POST, &uri, b"{}");
        assert_eq!(base.len(), 32);
        assert_eq!(base, fingerprint(&Method::POST, &uri, b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, &uri, b"{}"));
        assert_ne!(
            base,
            fingerprint(&Method::POST, &"/v1/orders?x=2".parse().unwrap(), b"{}")
        );
        assert_ne!(base, fingerprint(&Method::POST, &uri, b"{ }"));
    }
}
