//! Tienda's gateway: the one public entry. Routes by path prefix to the services, verifies
//! access tokens locally and forwards the identity in headers clients cannot forge.
//! Rate limits and circuit breaking from the policy resources are the next step (issue 7).
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`proxy`]: routing, endpoint choice, header hygiene, forwarding

pub mod config;
pub mod proxy;

use std::time::Duration;

use axum::{Router, routing::any};
use tienda_kit::{Needs, Platform};
use utoipa::OpenApi;

use crate::{
    config::Config,
    proxy::{Proxy, Upstreams, forward},
};

/// The gateway's own document: its operational routes (the services publish their own).
#[derive(OpenApi)]
#[openapi(info(
    title = "Tienda gateway",
    description = "Routes /v1/* to the services; each service's /openapi.json describes its API"
))]
struct ApiDoc;

/// A built gateway.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Reads the upstream table and binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let upstreams = Upstreams::parse(&config.upstreams)?;
        let platform = Platform::start("gateway", config.common.clone(), Needs::default()).await?;
        let proxy = Proxy::new(
            upstreams,
            config.tokens.verifier(),
            Duration::from_secs(config.upstream_timeout_seconds),
        );
        let router = Router::new()
            .route("/v1/{*rest}", any(forward))
            .route("/.well-known/jwks.json", any(forward))
            .with_state(proxy);
        Ok(Self(
            tienda_kit::Application::build(platform, router, ApiDoc::openapi()).await?,
        ))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
