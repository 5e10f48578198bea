//! Tienda's gateway: the one public entry. Routes by path prefix to the services, verifies
//! access tokens locally, applies per-route access rules, and enforces the shop's
//! RateLimitPolicy and CircuitPolicy resources — taken live from the cluster or from files,
//! swapped without a restart, with the generation of each reported.
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`proxy`]: a request's way through (routing, identity, limits, circuit, forwarding)
//! - [`access`]: per-route access rules, the client's address behind trusted proxies
//! - [`body_limit`]: the largest request body per route
//! - [`cluster`]: the Kubernetes sources (policies through the kit, EndpointSlices)
//! - [`upstream`]: endpoints, load balancing, health checks, outlier ejection
//!
//! The policies themselves — compiled sets, file and cluster sources, rate-limit rules — are
//! the kit's ([`tienda_kit::policy`]), as are the CircuitPolicy pieces (deadline, retries with
//! budget, breaker, bulkhead, ejection: [`tienda_kit::resilience`]), shared with every
//! service's outbound client.
//! - [`edge`]: CORS and security headers
//! - [`metrics`]: per-route and per-upstream metrics

pub mod access;
pub mod body_limit;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod metrics;
pub mod proxy;
pub mod upstream;

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::any, routing::get};
use serde_json::{Value, json};
use tienda_kit::{
    Needs, Platform,
    policy::{self, Policies, PolicySource, Scope},
};
use utoipa::OpenApi;

use crate::{
    access::{AccessRules, TrustedProxies},
    body_limit::BodyLimits,
    config::Config,
    proxy::{Proxy, forward},
    upstream::Upstreams,
};

/// The gateway's own document: its operational routes (each service publishes its own API).
#[derive(OpenApi)]
#[openapi(info(
    title = "Tienda gateway",
    description = "Routes /v1/* to the services (each service's /openapi.json describes its API) and enforces the shop's policies"
))]
struct ApiDoc;

/// `GET /policies` on the admin listener: the policies this replica enforces, with their
/// generations, and the documents it refused.
async fn policies(State(policies): State<Arc<Policies>>) -> Json<Value> {
    let set = policies.current();
    Json(json!({
        "replicas": policies.replicas(),
        "applied": set.applied,
        "rejected": set.rejected,
    }))
}

/// A built gateway.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Reads the upstream table and the policies, starts their watchers, and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let upstreams = Arc::new(Upstreams::parse(&config.upstreams)?);
        let access = AccessRules::parse(&config.access_rules)?;
        let trusted = TrustedProxies::parse(&config.trusted_proxies)?;
        let body_limits = BodyLimits::parse(&config.body_limits, config.common.max_body_bytes)?;
        let platform = Platform::start("gateway", config.common.clone(), Needs::default()).await?;
        let scope = Scope::gateway(&config.policy.shop, config.replicas);
        let policies = match config.policy.source() {
            // The policies and the EndpointSlices through one task: the gateway's own slice
            // gives the replica count that rate limits are divided by.
            PolicySource::Kubernetes => {
                let policies = Arc::new(Policies::new(scope, &platform.metrics.registry));
                cluster::start(&config, &platform, policies.clone(), upstreams.clone()).await?;
                policies
            }
            // Files: in force before the first request.
            _ => {
                let poll = Duration::from_millis(config.policy_poll_ms);
                policy::start(&platform, &config.policy, scope, poll).await?
            }
        };
        if config.health_check_seconds > 0 {
            platform.spawn(upstream::health_checks(
                upstreams.clone(),
                Duration::from_secs(config.health_check_seconds),
                platform.shutdown.clone(),
            ));
        }
        let gateway_metrics = metrics::GatewayMetrics::new(&platform.metrics.registry);
        gateway_metrics.upstreams(&proxy::UPSTREAMS);
        platform.spawn(forget_idle_clients(
            policies.clone(),
            gateway_metrics.clone(),
            platform.shutdown.clone(),
        ));

        let proxy = Proxy {
            upstreams,
            policies: policies.clone(),
            verifier: config.tokens.verifier(),
            access: Arc::new(access),
            trusted: Arc::new(trusted),
            clients: (0..config.serve_threads.max(1))
                .map(|_| proxy::client(config.upstream_http2))
                .collect(),
            default_timeout: Duration::from_secs(config.upstream_timeout_seconds),
            body_limits: Arc::new(body_limits),
            metrics: gateway_metrics,
        };
        let router = Router::new()
            .route("/v1/{*rest}", any(forward))
            .route("/.well-known/jwks.json", any(forward))
            .with_state(Arc::new(proxy));
        let router = edge::layers(router, &config.cors_origins)?;
        let admin = Router::new().route("/policies", get(self::policies).with_state(policies));
        Ok(Self(
            tienda_kit::Application::build_with_admin(platform, router, admin, ApiDoc::openapi())
                .await?
                .serve_on_threads(config.serve_threads),
        ))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The admin listener's port (`/metrics`, `/policies`).
    pub fn admin_port(&self) -> u16 {
        self.0.admin_port()
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}

/// Every minute, drops rate-limit state of clients that have gone quiet.
/// Every minute: forgets clients idle long enough (their counters are full again); every
/// 5 s: makes the refusal series of the rate-limit rules in force exist at 0.
async fn forget_idle_clients(
    policies: Arc<Policies>,
    metrics: metrics::GatewayMetrics,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    let mut ticks = 0u32;
    loop {
        for limit in &policies.current().limits {
            metrics.rate_limit_rule(&limit.policy, &limit.rule.name, limit.rule.shadow);
            if ticks % 12 == 11 {
                limit.forget_idle();
            }
        }
        ticks = ticks.wrapping_add(1);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.wait() => return,
        }
    }
}
