//! Tienda's payments service (being built: see its issue).
//!
//! # Layout
//! - [`config`]: flags and environment

pub mod config;

use tienda_kit::{Needs, Platform, dead_letter::DeadLetters, outbox::RelayConfig};
use utoipa::OpenApi;

use crate::config::Config;

/// The `source` of every envelope payments writes.
pub const SOURCE: &str = "payments";

/// The migrations of the payments database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(OpenApi)]
#[openapi(info(title = "Tienda payments", description = "Tienda's payments service"))]
struct ApiDoc;

/// A built payments service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, starts the relay, binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::start(
            SOURCE,
            config.common.clone(),
            Needs {
                database: Some(&MIGRATOR),
                nats: true,
            },
        )
        .await?;
        platform.start_relay(RelayConfig::default())?;
        let admin = tienda_kit::dead_letter::router(
            DeadLetters {
                jetstream: platform.nats()?.jetstream.clone(),
                component: platform.name.to_owned(),
            },
            config.tokens.verifier(),
        );
        Ok(Self(
            tienda_kit::Application::build_with_admin(
                platform,
                axum::Router::new(),
                admin,
                ApiDoc::openapi(),
            )
            .await?,
        ))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The admin listener's port (`/metrics`, `/admin/dead-letters`).
    pub fn admin_port(&self) -> u16 {
        self.0.admin_port()
    }

    /// The platform (tests reach the database through it).
    pub fn platform(&self) -> &tienda_kit::Platform {
        self.0.platform()
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}
