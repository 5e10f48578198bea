//! The application shape every service has: `build` (connect, migrate, bind) → `port` →
//! `run_until_stopped` (serve until SIGTERM, then drain with a deadline).
//!
//! A service builds a [`Platform`] (database, NATS, metrics, health, shutdown), its API router,
//! and hands both to [`Application::build`], which adds the operational routes (`/livez`,
//! `/readyz`, `/openapi.json`), the standard layers (request id, trace span, metrics, body
//! limit, panic → 500 problem) and problem+json fallbacks.
//!
//! Two listeners: the public one (`LISTEN_ADDR`), which the gateway routes to, and the admin
//! one (`ADMIN_ADDR`), for operators and Prometheus only: `/metrics`, and whatever
//! operator-only router the service hands to [`Application::build_with_admin`] (`/policies`,
//! the dead-letter admin API). The public listener answers 404 for those paths, so nothing
//! operator-only can reach the internet through the gateway. Probes answer on both.

use std::{future::Future, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, Request, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use sqlx::{PgPool, migrate::Migrator};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::{
    OpenApi,
    openapi::{
        RefOr,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    config::CommonConfig,
    consumer::{Consumer, ConsumerConfig, Handler},
    db, health,
    health::Health,
    metrics,
    metrics::Metrics,
    nats::Nats,
    outbox::{Relay, RelayConfig},
    problem::Problem,
    resilience::Backoff,
    serve,
    shutdown::Shutdown,
    trace_context,
};

/// The request id header, generated when the client sends none and echoed in the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids as UUIDv4 strings from a thread-local generator (tower-http's `MakeRequestUuid`
/// asks the OS for randomness on every request).
#[derive(Debug, Clone, Copy, Default)]
pub struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = id.hyphenated().encode_lower(&mut buf);
        axum::http::HeaderValue::from_str(text)
            .ok()
            .map(RequestId::new)
    }
}

/// What a service's process runs on. Cheap to clone; handlers get parts of it as state.
#[derive(Clone, Debug)]
pub struct Platform {
    /// The service's name (`products`): metrics label, NATS connection name, log field.
    pub name: &'static str,
    /// The shared configuration.
    pub config: CommonConfig,
    /// The service's database, when it has one.
    pub db: Option<PgPool>,
    /// NATS, when the service uses it.
    pub nats: Option<Nats>,
    /// Prometheus registry and HTTP metrics.
    pub metrics: Metrics,
    /// The metrics every consumer of this process counts into.
    pub consumer_metrics: crate::consumer::ConsumerMetrics,
    /// Readiness checks.
    pub health: Health,
    /// The process's shutdown signal.
    pub shutdown: Shutdown,
    /// Background tasks that must finish before the process exits.
    pub tasks: TaskTracker,
    /// Set when a background task panicked: the process then stops and exits with an error,
    /// so its supervisor (Kubernetes, `tienda up`) starts it again instead of leaving it
    /// serving without its relay or a consumer.
    pub task_panicked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a service needs from the platform.
#[derive(Debug, Default, Clone, Copy)]
pub struct Needs<'a> {
    /// A database, migrated with these migrations.
    pub database: Option<&'a Migrator>,
    /// A NATS connection.
    pub nats: bool,
}

impl Platform {
    /// Connects what `needs` asks for and registers readiness checks: the database is
    /// critical, NATS informational.
    pub async fn start(
        name: &'static str,
        config: CommonConfig,
        needs: Needs<'_>,
    ) -> anyhow::Result<Self> {
        let shutdown = Shutdown::new();
        let mut health = Health::new(shutdown.clone());
        if let Some(instance) = &config.instance {
            health.set_instance(instance)?;
        }
        let db = match needs.database {
            Some(migrator) => {
                let url = config.database_url.as_ref().context(
                    "DATABASE_URL is not set: this service keeps its state in PostgreSQL",
                )?;
                let pool = db::connect(url, config.database_max_connections, name).await?;
                db::migrate_all(&pool, migrator).await?;
                let check_pool = pool.clone();
                health.add("database", true, move || {
                    let pool = check_pool.clone();
                    async move { db::ping(&pool).await }
                });
                Some(pool)
            }
            None => None,
        };
        let nats = if needs.nats {
            let nats = Nats::connect(&config, name).await?;
            let check = nats.clone();
            health.add("nats", false, move || {
                let result = check.check();
                async move { result }
            });
            Some(nats)
        } else {
            None
        };
        let metrics = Metrics::new(name);
        if let Some(pool) = &db {
            db::PoolMetrics::register(pool, &metrics.registry)
                .context("registering the pool's metrics")?;
        }
        let consumer_metrics = crate::consumer::ConsumerMetrics::new(&metrics.registry);
        let platform = Self {
            name,
            config,
            db,
            nats,
            consumer_metrics,
            metrics,
            health,
            shutdown,
            tasks: TaskTracker::new(),
            task_panicked: Default::default(),
        };
        // Every service with NATS hears which sessions ended, so its verifiers refuse their
        // access tokens at once (see `revocation`).
        if let Some(nats) = &platform.nats {
            platform.spawn(crate::revocation::follow(
                nats.jetstream.clone(),
                platform.shutdown.clone(),
            ));
        }
        Ok(platform)
    }

    /// The database pool; panics if the service did not ask for one (a programming error).
    pub fn db(&self) -> &PgPool {
        self.db
            .as_ref()
            .expect("the service declared Needs { database: Some(..) }")
    }

    /// The NATS connection; an error if the service did not ask for one.
    pub fn nats(&self) -> anyhow::Result<&Nats> {
        self.nats
            .as_ref()
            .context("this service did not declare Needs { nats: true }")
    }

    /// Starts the outbox relay in the background; it stops on shutdown, before the pool closes.
    pub fn start_relay(&self, config: RelayConfig) -> anyhow::Result<()> {
        let relay = Relay::new(
            self.db().clone(),
            self.nats()?.jetstream.clone(),
            config,
            &self.metrics.registry,
        );
        self.spawn(relay.run(self.shutdown.clone()));
        Ok(())
    }

    /// Starts a consumer in the background. If it cannot bind (not provisioned yet, NATS
    /// down) it logs why and tries again with backoff until shutdown.
    pub fn start_consumer<H: Handler + Clone>(
        &self,
        config: ConsumerConfig,
        handler: H,
    ) -> anyhow::Result<()> {
        let pool = self.db().clone();
        let client = self.nats()?.client.clone();
        let metrics = self.consumer_metrics.clone();
        let shutdown = self.shutdown.clone();
        self.spawn(async move {
            let mut attempt = 0u32;
            while !shutdown.is_triggered() {
                let consumer = Consumer::with_metrics(pool.clone(), client.clone(), config.clone(), handler.clone(), metrics.clone());
                match consumer.run(shutdown.clone()).await {
                    Ok(()) => return,
                    Err(err) => {
                        attempt += 1;
                        let delay = Backoff::new(Duration::from_millis(500), Duration::from_secs(30)).delay(attempt);
                        tracing::error!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, "consumer cannot run");
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = shutdown.wait() => {}
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Runs a background task (relay, consumer) that is awaited on shutdown. It must stop
    /// when `self.shutdown` triggers. If it panics, the process stops and exits with an error
    /// (a service without its relay or a consumer must not go on answering as if healthy).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(task);
        let shutdown = self.shutdown.clone();
        let panicked = self.task_panicked.clone();
        self.tasks.spawn(async move {
            if let Err(error) = inner.await
                && error.is_panic()
            {
                tracing::error!(%error, "a background task panicked; stopping so the process is restarted");
                panicked.store(true, std::sync::atomic::Ordering::SeqCst);
                shutdown.trigger();
            }
        });
    }
}

/// A bound, ready-to-run service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// Threads serving the public listener, each with its own runtime; 0: the main runtime.
    serve_threads: usize,
    port: u16,
    router: Router,
    admin_listener: TcpListener,
    admin_port: u16,
    admin_router: Router,
    platform: Platform,
}

async fn bind(addr: std::net::SocketAddr, what: &str, var: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding the {what} listener to {addr}: is another process using it? (set {var})")
    })
}

#[derive(OpenApi)]
#[openapi(
    paths(health::livez, health::readyz),
    components(schemas(crate::problem::Problem))
)]
struct OperationsApi;

/// The Problem schema, which every document needs for its `default` answers.
#[derive(OpenApi)]
#[openapi(components(schemas(Problem)))]
struct ProblemApi;

impl Application {
    /// Adds the operational routes and standard layers to `api` and binds the listeners.
    /// `openapi` describes `api`; the operational routes are added to it.
    pub async fn build(
        platform: Platform,
        api: Router,
        openapi: utoipa::openapi::OpenApi,
    ) -> anyhow::Result<Self> {
        Self::build_with_admin(platform, api, Router::new(), openapi).await
    }

    /// Like [`Application::build`], with `admin` — operator-only routes — served on the admin
    /// listener beside `/metrics` and the probes.
    pub async fn build_with_admin(
        platform: Platform,
        api: Router,
        admin: Router,
        mut openapi: utoipa::openapi::OpenApi,
    ) -> anyhow::Result<Self> {
        let listener = bind(platform.config.listen_addr, "public", "LISTEN_ADDR").await?;
        let port = listener.local_addr()?.port();
        let admin_listener = bind(platform.config.admin_addr, "admin", "ADMIN_ADDR").await?;
        let admin_port = admin_listener.local_addr()?.port();

        openapi.merge(OperationsApi::openapi());
        // Every operation's `default` answer is a Problem (see `problems_as_served`).
        openapi.merge(ProblemApi::openapi());
        // Operations marked `security(("bearer" = []))` need the scheme they name.
        openapi
            .components
            .get_or_insert_with(Default::default)
            .security_schemes
            .entry("bearer".into())
            .or_insert_with(|| {
                RefOr::T(SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some("An access token from the auth service"))
                        .build(),
                ))
            });
        let mut openapi_json =
            serde_json::to_value(&openapi).context("serializing the OpenAPI document")?;
        problems_as_served(&mut openapi_json);

        let probes = Router::new().route("/livez", get(health::livez)).route(
            "/readyz",
            get(health::readyz).with_state(platform.health.clone()),
        );
        let operations = probes.clone().route(
            "/openapi.json",
            get(move || async move { axum::Json(openapi_json.clone()) }),
        );
        let admin_router = admin
            .merge(probes)
            .route(
                "/metrics",
                get(metrics::endpoint).with_state(platform.metrics.clone()),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(
                ServiceBuilder::new()
                    .layer(CatchPanicLayer::custom(|_| {
                        Problem::internal().into_response()
                    }))
                    .layer(DefaultBodyLimit::max(platform.config.max_body_bytes)),
            );

        let proxies = std::sync::Arc::new(
            crate::net::TrustedProxies::parse(&platform.config.trusted_proxies)
                .context("TRUSTED_PROXIES")?,
        );
        let router = api
            .merge(operations)
            .route_layer(middleware::from_fn_with_state(platform.metrics.clone(), metrics::track))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(REQUEST_ID, FastRequestId))
                    .layer(middleware::from_fn(refuse_nul_in_url))
                    .layer(middleware::from_fn(plain_errors_as_problems))
                    .layer(axum::Extension(proxies))
                    .layer(middleware::from_fn(trace_context::layer))
                    .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let request_id = request
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
                    }))
                    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                    .layer(CatchPanicLayer::custom(|_| Problem::internal().into_response()))
                    .layer(DefaultBodyLimit::max(platform.config.max_body_bytes)),
            );
        tracing::info!(service = platform.name, port, admin_port, "listening");
        Ok(Self {
            listener,
            serve_threads: 0,
            port,
            router,
            admin_listener,
            admin_port,
            admin_router,
            platform,
        })
    }

    /// Serves the public listener from `threads` threads, each with a single-threaded runtime
    /// of its own (see [`serve::serve_on_threads`]); 0 serves it on the main runtime.
    pub fn serve_on_threads(mut self, threads: usize) -> Self {
        self.serve_threads = threads;
        self
    }

    /// The port the public listener is bound to (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the admin listener is bound to.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The platform, for tests and for spawning background tasks.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Serves until the platform's shutdown triggers (SIGTERM, Ctrl-C, or a test), then stops
    /// accepting, lets in-flight requests and background tasks finish within the shutdown
    /// timeout, and closes the database pool and NATS connection.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            serve_threads,
            router,
            admin_listener,
            admin_router,
            platform,
            ..
        } = self;
        platform.shutdown.trigger_on_signals();
        let deadline = platform.config.shutdown_timeout();
        let stop = platform.shutdown.clone();
        let limits = serve::Limits {
            header_read_timeout: Duration::from_secs(
                platform.config.header_read_timeout_seconds.max(1),
            ),
            max_header_bytes: platform.config.max_header_bytes,
            max_headers: platform.config.max_headers,
        };
        let admin = tokio::spawn(serve::serve(
            admin_listener,
            admin_router,
            limits,
            stop.clone(),
        ));
        let mut server = if serve_threads == 0 {
            tokio::spawn(serve::serve(listener, router, limits, stop))
        } else {
            tokio::spawn(async move {
                if let Err(error) =
                    serve::serve_on_threads(listener, router, limits, stop, serve_threads).await
                {
                    tracing::error!(%error, "starting the serving threads failed");
                }
            })
        };

        // Shutdown first: the server also ends on the shutdown signal, and seeing its end
        // before the signal's would take a clean SIGTERM for a crash.
        let served = tokio::select! {
            biased;
            () = platform.shutdown.wait() => None,
            result = &mut server => Some(result),
        };
        if let Some(result) = served {
            // The server stopped by itself: that is a failure, not a shutdown.
            platform.shutdown.trigger();
            result.context("the HTTP server task panicked")?;
            anyhow::bail!("the HTTP server stopped unexpectedly");
        }

        let started = tokio::time::Instant::now();
        match tokio::time::timeout(deadline, &mut server).await {
            Ok(result) => result.context("the HTTP server task panicked")?,
            Err(_) => {
                tracing::warn!(
                    ?deadline,
                    "in-flight requests did not finish before the deadline"
                );
                server.abort();
            }
        }
        // Both listeners stopped accepting at the shutdown signal; the admin one has no
        // long requests to drain.
        if tokio::time::timeout(Duration::from_secs(1), admin)
            .await
            .is_err()
        {
            tracing::warn!("the admin listener did not stop in time");
        }
        platform.tasks.close();
        let remaining = deadline
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        if tokio::time::timeout(remaining, platform.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not finish before the deadline");
        }
        if let Some(nats) = &platform.nats
            && let Err(err) = nats.client.flush().await
        {
            tracing::warn!(error = %err, "flushing NATS on shutdown");
        }
        if let Some(db) = &platform.db {
            db.close().await;
        }
        // The spans of the drain go out before the process does.
        tokio::task::spawn_blocking(crate::telemetry::flush)
            .await
            .ok();
        tracing::info!(service = platform.name, "stopped");
        if platform
            .task_panicked
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            anyhow::bail!(
                "a background task panicked (see the log above); exiting to be restarted"
            );
        }
        Ok(())
    }
}

/// Makes the document say what is served: a [`Problem`] body is `application/problem+json`
/// (utoipa writes `application/json` for every body), and every operation gets a `default`
/// response — a problem document — for the answers any route can give besides those it lists
/// (400 for a malformed URL, 413, 415, 429 at the gateway, 503 while shutting down).
fn problems_as_served(openapi: &mut serde_json::Value) {
    let problem = serde_json::json!({"$ref": "#/components/schemas/Problem"});
    let Some(paths) = openapi.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for item in paths.values_mut().filter_map(|i| i.as_object_mut()) {
        for (method, operation) in item.iter_mut() {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            for response in responses.values_mut() {
                let Some(content) = response.get_mut("content").and_then(|c| c.as_object_mut())
                else {
                    continue;
                };
                if content
                    .get("application/json")
                    .is_some_and(|media| media["schema"] == problem)
                    && let Some(media) = content.remove("application/json")
                {
                    content.insert("application/problem+json".into(), media);
                }
            }
            responses.entry("default").or_insert_with(|| {
                serde_json::json!({
                    "description": "Any other answer: a problem document (RFC 9457) saying what \
                                    went wrong and what to do",
                    "content": {"application/problem+json": {"schema": problem}},
                })
            });
        }
    }
}

/// Turns the plain-text errors axum's own extractors answer with (a path segment that is no
/// UUID, a query string of the wrong shape, …) into problem documents, so every error a client
/// meets has the one documented shape.
async fn plain_errors_as_problems(
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    match status {
        StatusCode::BAD_REQUEST => Problem::bad_request(text),
        StatusCode::NOT_FOUND => Problem::not_found(text),
        StatusCode::UNPROCESSABLE_ENTITY => Problem::validation(text),
        _ if status.is_server_error() => Problem::internal(),
        _ => {
            let title = status.canonical_reason().unwrap_or("Error");
            let slug = title.to_lowercase().replace(' ', "-");
            Problem::new(status, &slug, title).with_detail(text)
        }
    }
    .into_response()
}

/// Refuses a URL whose path or query spells the NUL character (`%00`) with a 400: no
/// resource or parameter holds one, and PostgreSQL, which stores no NUL in text, would
/// otherwise turn the client's input into a 500 (and the gateway would count that against the
/// service's circuit breaker).
async fn refuse_nul_in_url(request: axum::extract::Request, next: middleware::Next) -> Response {
    let uri = request.uri();
    let spells_nul = |s: &str| s.contains("%00");
    if spells_nul(uri.path()) || uri.query().is_some_and(spells_nul) {
        return Problem::bad_request(
            "The URL holds an encoded NUL character (%00), which no path or parameter may \
             contain; remove it.",
        )
        .into_response();
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> Response {
    Problem::not_found(format!(
        "No route for {}; see /openapi.json for the API.",
        uri.path()
    ))
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .with_detail(format!(
        "{} does not accept {method}; see /openapi.json.",
        uri.path()
    ))
    .into_response()
}
