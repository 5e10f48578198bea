//! Tienda's orders service: checkout with a required `Idempotency-Key`, the order state
//! machine, the orchestrated saga (reserve stock → authorize payment → commit stock →
//! confirm; compensate on failure or timeout, re-sending compensations until answered) and the append-only order event log.
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`domain`]: the state machine, the saga's decisions, checkout rules, log entries (no I/O)
//! - [`store`]: SQL: orders, lines, the event log, saga state
//! - [`catalog`]: prices from products over HTTP (the kit's outbound client)
//! - [`saga`]: the saga's consumers (inventory and payment replies) and deadline sweeper
//! - [`metrics`]: the saga's steps, settle times and sagas in flight
//! - [`aftersale`]: capture at shipping, refunds, returns and their restock
//! - [`cart`]: carts in PostgreSQL (guest tokens, lines with the price seen)
//! - [`timeline`]: an order's log as customers read it, and the feed of appends
//! - [`http`]: the API
//! - [`error`]: errors as problem documents

pub mod aftersale;
pub mod cart;
pub mod catalog;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod saga;
pub mod store;
pub mod timeline;

use std::time::Duration;

use tienda_kit::{
    Needs, Platform,
    consumer::ConsumerConfig,
    dead_letter::DeadLetters,
    idempotency::{Store, StoreConfig},
    outbound::Outbound,
    outbox::RelayConfig,
};

use crate::{catalog::Catalog, config::Config, saga::Timeouts};

/// The `source` of every envelope orders writes.
pub const SOURCE: &str = "orders";

/// The migrations of the orders database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The durable consumer of inventory's replies (provisioned by the operator).
pub const INVENTORY_CONSUMER: &str = "orders-inventory-events";

/// The durable consumer of payments' replies (provisioned by the operator).
pub const PAYMENT_CONSUMER: &str = "orders-payment-events";

/// Most order timelines streamed at once by one process.
pub const MAX_EVENT_STREAMS: usize = 1_000;

/// A built orders service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, starts the relay, the saga's consumers and sweeper, binds.
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
        metrics::SAGA
            .register(&platform.metrics.registry)
            .map_err(|e| anyhow::anyhow!("registering the saga's metrics: {e}"))?;
        let timeouts = Timeouts {
            reserve: Duration::from_millis(config.reserve_timeout_ms),
            authorize: Duration::from_millis(config.authorize_timeout_ms),
            reservation_ttl: Duration::from_secs(config.reservation_ttl_seconds),
            commit_margin: Duration::from_millis(config.commit_margin_ms),
            resend: Duration::from_millis(config.resend_interval_ms.max(10)),
            compensation_deadline: Duration::from_secs(config.compensation_deadline_seconds),
            authorize_retry: Duration::from_millis(config.authorize_retry_ms),
        };
        // The saga's replies change only this database (saga rows, orders, outbox): they are
        // applied in batches, one commit for the replies already received, one batch at a time
        // (as products' commands: concurrent batches hold their row locks for the batch).
        platform.start_consumer(
            ConsumerConfig {
                batch: 32,
                concurrency: 1,
                ..ConsumerConfig::new(SOURCE, "INVENTORY", INVENTORY_CONSUMER)
            },
            saga::InventoryReplies { timeouts },
        )?;
        platform.start_consumer(
            ConsumerConfig {
                batch: 32,
                concurrency: 1,
                ..ConsumerConfig::new(SOURCE, "PAYMENT", PAYMENT_CONSUMER)
            },
            saga::PaymentReplies { timeouts },
        )?;
        platform.spawn(saga::sweeper(
            platform.db().clone(),
            timeouts,
            Duration::from_millis(config.sweep_interval_ms.max(10)),
            platform.shutdown.clone(),
        ));
        let feed = timeline::Feed::new(MAX_EVENT_STREAMS);
        platform.spawn(timeline::listen(
            platform.db().clone(),
            feed.clone(),
            platform.shutdown.clone(),
        ));
        let state = http::AppState {
            feed,
            shutdown: platform.shutdown.clone(),
            db: platform.db().clone(),
            verifier: config.tokens.verifier(),
            idempotency: Store::start(&platform, StoreConfig::default()),
            catalog: Catalog {
                outbound: Outbound::start(&platform, &config.policy).await?,
                base_url: config.products_url.clone(),
            },
            timeouts,
            cancel_window: Duration::from_secs(config.cancel_window_seconds),
            return_window: Duration::from_secs(config.return_window_days * 86_400),
        };
        let (router, openapi) = http::router(state);
        // Operators inspect, replay or discard the replies this service gave up on, and
        // rebuild the order read models from the log.
        let admin = tienda_kit::dead_letter::router(
            DeadLetters {
                jetstream: platform.nats()?.jetstream.clone(),
                component: platform.name.to_owned(),
            },
            config.tokens.verifier(),
        )
        .merge(http::admin::router(
            platform.db().clone(),
            config.tokens.verifier(),
        ));
        Ok(Self(
            tienda_kit::Application::build_with_admin(platform, router, admin, openapi).await?,
        ))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The admin listener's port (`/metrics`, `/admin/dead-letters`, `/admin/orders/rebuild`).
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
