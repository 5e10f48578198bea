//! Tienda's products service: the catalog (products, variants, categories), search, and
//! inventory whose reservations never oversell.
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`http`]: the API
//! - [`catalog`]: products and variants: shapes, rules, SQL
//! - [`categories`]: the category tree: shapes, rules, SQL
//! - [`search`]: full text + trigram search, filters, facets, keyset pages
//! - [`inventory`]: stock, the ledger, reservations and their sweeper
//! - [`import`]: bulk import (NDJSON, CSV) and price updates
//! - [`analytics`]: views and top sellers
//! - [`commands`]: the saga's inventory commands from JetStream
//! - [`cache`]: the read cache and its event-driven invalidation
//! - [`error`]: errors as problem documents

pub mod analytics;
pub mod cache;
pub mod catalog;
pub mod categories;
pub mod commands;
pub mod config;
pub mod error;
pub mod http;
pub mod import;
pub mod inventory;
pub mod search;

use std::time::Duration;

use tienda_kit::{
    Needs, Platform,
    consumer::ConsumerConfig,
    dead_letter::DeadLetters,
    idempotency::{Store, StoreConfig},
    outbox::RelayConfig,
};

use crate::{cache::ProductCache, config::Config};

/// The `source` of every envelope products writes.
pub const SOURCE: &str = "products";

/// The migrations of the products database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The durable consumer of the saga's inventory commands (provisioned by the operator).
pub const COMMANDS_CONSUMER: &str = "products-inventory-commands";

/// A built products service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, starts the relay, the command consumer, the reservation and
    /// idempotency-key sweepers and the cache's event feed, binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::start(
            "products",
            config.common.clone(),
            Needs {
                database: Some(&MIGRATOR),
                nats: true,
            },
        )
        .await?;
        let cache = ProductCache::new(
            config.cache_capacity,
            Duration::from_secs(config.cache_ttl_seconds),
        );
        platform.spawn(cache.clone().follow(
            platform.nats()?.jetstream.clone(),
            platform.shutdown.clone(),
        ));
        platform.start_relay(RelayConfig::default())?;
        platform.start_consumer(
            ConsumerConfig {
                // Every effect of a command is in the transaction, so batches are safe: one
                // commit for the commands already received. One batch at a time: concurrent
                // batches each hold their SKUs' row locks for the whole batch, and the
                // checkout bench collapsed under that contention (see docs/benchmarks.md).
                batch: 32,
                concurrency: 1,
                ..ConsumerConfig::new("products", "INVENTORY", COMMANDS_CONSUMER)
            },
            commands::InventoryCommands,
        )?;
        platform.spawn(sweeper(
            platform.db().clone(),
            Duration::from_millis(config.sweep_interval_ms.max(10)),
            platform.shutdown.clone(),
        ));
        let views = std::sync::Arc::new(analytics::Views::default());
        platform.spawn(views.clone().run(
            platform.db().clone(),
            Duration::from_secs(5),
            platform.shutdown.clone(),
        ));
        let state = http::AppState {
            db: platform.db().clone(),
            cache,
            verifier: config.tokens.verifier(),
            limits: http::Limits {
                import_max_bytes: config.import_max_bytes,
                import_max_rows: config.import_max_rows,
            },
            views,
            idempotency: Store::start(&platform, StoreConfig::default()),
        };
        let (router, openapi) = http::router(state);
        // Operators inspect, replay or discard the commands this service gave up on.
        let admin = tienda_kit::dead_letter::router(
            DeadLetters {
                jetstream: platform.nats()?.jetstream.clone(),
                component: platform.name.to_owned(),
            },
            config.tokens.verifier(),
        );
        Ok(Self(
            tienda_kit::Application::build_with_admin(platform, router, admin, openapi).await?,
        ))
    }

    /// The admin listener's port (`/metrics`, `/admin/dead-letters`).
    pub fn admin_port(&self) -> u16 {
        self.0.admin_port()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The platform (tests).
    pub fn platform(&self) -> &Platform {
        self.0.platform()
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}

/// Releases expired reservations until shutdown.
async fn sweeper(db: sqlx::PgPool, every: Duration, shutdown: tienda_kit::Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.wait() => return,
        }
        loop {
            match inventory::sweep(&db).await {
                Ok(100) => continue,
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(released = n, "expired reservations released");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reservation sweep failed");
                    break;
                }
            }
        }
    }
}
