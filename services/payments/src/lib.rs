//! Tienda's payments service: the order saga's authorize, capture, void and refund commands
//! carried out through a payment provider, with a pure state machine, money in minor units
//! and refunds that never exceed the capture.
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`domain`]: money with currency exponents, the payment state machine, the refund bound
//! - [`provider`]: the provider trait, the built-in `sandbox` and `stripe`
//! - [`invoice`]: invoices on capture and credit notes on refund, gap-free numbers, HTML and PDF
//! - [`metrics`]: payments by outcome for Prometheus, read from the ledger
//! - [`reconcile`]: the daily comparison of our ledger with the providers' records
//! - [`webhooks`]: provider webhooks verified, stored once, reconciled with the provider
//! - [`db`]: SQL for payments, attempts and refunds
//! - [`commands`]: the saga's payment commands from JetStream, answered through the outbox
//! - [`challenge`]: the sandbox's 3-D Secure challenges
//! - [`http`]: the API (admin reads, challenge answers)
//! - [`error`]: errors as problem documents
//!
//! # Provider calls and transactions
//! A command's provider call happens inside the consumer's transaction while the payment's
//! lock is held, so the state change, the attempt's outcome, the reply and the inbox row
//! commit together. Just before the call, the attempt is recorded as `started` in its own
//! committed transaction (with the payment row, for a new payment). If the command's commit
//! is then lost (process killed, database error), the redelivered command finds the
//! `started` attempt and — even past its deadline — calls again with the same idempotency key
//! to learn what the provider did: an authorization that turns out to be held after the
//! deadline is voided, a capture, void or refund that happened is recorded and answered. The
//! price with a network provider is a connection and a lock held for the call (bounded by the
//! command's deadline and the CircuitPolicy's timeout), plus a second connection for a moment
//! per call.

pub mod challenge;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod geoip;
pub mod http;
pub mod invoice;
pub mod metrics;
pub mod pending_refunds;
pub mod provider;
pub mod reconcile;
pub mod webhooks;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::sync::Notify;

use tienda_kit::{
    Needs, Platform, consumer::ConsumerConfig, dead_letter::DeadLetters, outbox::RelayConfig,
};

use crate::{
    challenge::Challenges,
    commands::PaymentCommands,
    config::{Config, ProviderName},
    provider::{Provider, Providers, paypal::PayPal, sandbox::Sandbox, stripe::Stripe},
    webhooks::WebhookSecrets,
};

/// The `source` of every envelope payments writes.
pub const SOURCE: &str = "payments";

/// The migrations of the payments database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The durable consumer of the saga's payment commands (provisioned by the operator).
pub const COMMANDS_CONSUMER: &str = "payments-commands";

/// The providers of this process: the chosen one for new payments, plus Stripe and PayPal
/// when their credentials are set and the sandbox always (payments made earlier with them can
/// be followed up).
async fn providers(platform: &Platform, config: &Config) -> anyhow::Result<Providers> {
    let sandbox: Arc<dyn Provider> =
        Arc::new(Sandbox::new(Duration::from_millis(config.sandbox_slow_ms)));
    let stripe_key = config
        .stripe
        .stripe_secret_key
        .clone()
        .filter(|k| !k.is_empty());
    let paypal_credentials = match (
        &config.paypal.paypal_client_id,
        &config.paypal.paypal_client_secret,
    ) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Some((id.clone(), secret.clone()))
        }
        _ => None,
    };
    let outbound = if stripe_key.is_some() || paypal_credentials.is_some() {
        Some(tienda_kit::outbound::Outbound::start(platform, &config.policy).await?)
    } else {
        None
    };
    let stripe: Option<Arc<dyn Provider>> = stripe_key.map(|key| {
        Arc::new(Stripe::new(
            outbound.clone().expect("started above"),
            &config.stripe.stripe_api_base,
            key,
        )) as Arc<dyn Provider>
    });
    let paypal: Option<Arc<dyn Provider>> = paypal_credentials.map(|(id, secret)| {
        Arc::new(PayPal::new(
            outbound.clone().expect("started above"),
            &config.paypal.paypal_api_base,
            id,
            secret,
        )) as Arc<dyn Provider>
    });
    let default = match config.provider {
        ProviderName::Sandbox => sandbox.clone(),
        ProviderName::Stripe => {
            if config.stripe.stripe_webhook_secrets.is_empty() {
                tracing::warn!(
                    "STRIPE_WEBHOOK_SECRETS is empty: every Stripe webhook will be refused, and \
                     3-D Secure payments conclude only when the customer answers the challenge URL"
                );
            }
            stripe.clone().context(
                "PAYMENTS_PROVIDER=stripe needs STRIPE_SECRET_KEY (the secret API key, sk_test_… \
                 or sk_live_…); set it, or choose PAYMENTS_PROVIDER=sandbox",
            )?
        }
        ProviderName::Paypal => paypal.clone().context(
            "PAYMENTS_PROVIDER=paypal needs PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET (the REST \
             app's credentials); set them, or choose PAYMENTS_PROVIDER=sandbox",
        )?,
    };
    let mut providers = Providers::new(default).with(sandbox);
    for provider in [stripe, paypal].into_iter().flatten() {
        providers = providers.with(provider);
    }
    Ok(providers)
}

/// The seller and tax rate invoices are issued with.
/// The GeoIP table `PAYMENTS_GEOIP_CSV` names (empty without one); a file that cannot be
/// read stops the start, with the line at fault.
fn geoip(config: &Config) -> anyhow::Result<geoip::GeoIp> {
    let Some(path) = &config.geoip_csv else {
        return Ok(geoip::GeoIp::empty());
    };
    let table = geoip::GeoIp::load(path).map_err(|e| anyhow::anyhow!("PAYMENTS_GEOIP_CSV: {e}"))?;
    tracing::info!(path = %path.display(), ranges = table.len(), "GeoIP table loaded");
    Ok(table)
}

fn invoicing(config: &Config) -> invoice::Invoicing {
    let i = &config.invoices;
    invoice::Invoicing {
        shop: config.policy.shop.clone(),
        seller: invoice::Party {
            name: i
                .invoice_seller_name
                .clone()
                .unwrap_or_else(|| config.policy.shop.clone()),
            address: i
                .invoice_seller_address
                .split(';')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            country: i.invoice_seller_country.clone(),
            tax_id: i.invoice_seller_tax_id.clone(),
            email: None,
        },
        tax_rate_bps: i.invoice_tax_rate_bps,
    }
}

/// A built payments service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, starts the relay and the command consumer, binds.
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
        let providers = providers(&platform, &config).await?;
        let challenges = Challenges {
            public_url: config.public_url.clone(),
            ttl: Duration::from_secs(config.challenge_ttl_seconds),
        };
        // Each command holds a database connection across its provider call and takes a second
        // one for a moment to record the attempt as started: at most half the pool, less two
        // for the relay and the API.
        // Challenges that lapsed while the service was down are declined before any command
        // or answer is taken; the sweeper then runs every period. (Sweeping from the spawned
        // task's first poll raced with the first requests.)
        challenge::sweep(platform.db()).await?;
        let mut consumer = ConsumerConfig::new(SOURCE, "PAYMENT", COMMANDS_CONSUMER);
        consumer.concurrency =
            (config.common.database_max_connections.saturating_sub(2) / 2).clamp(1, 6) as usize;
        platform.start_consumer(
            consumer,
            PaymentCommands {
                db: platform.db().clone(),
                providers: providers.clone(),
                challenges,
                invoicing: invoicing(&config),
                geoip: Arc::new(geoip(&config)?),
            },
        )?;
        let webhook_wake = Arc::new(Notify::new());
        platform.spawn(webhooks::run_worker(
            platform.db().clone(),
            providers.clone(),
            webhook_wake.clone(),
            Duration::from_secs(config.webhook_poll_seconds.max(1)),
            platform.shutdown.clone(),
        ));
        platform.spawn(reconcile::run_daily(
            platform.db().clone(),
            providers.clone(),
            Duration::from_secs(3600),
            platform.shutdown.clone(),
        ));
        let refund_wake = Arc::new(Notify::new());
        platform.spawn(pending_refunds::run(
            platform.db().clone(),
            providers.clone(),
            invoicing(&config),
            refund_wake.clone(),
            Duration::from_secs(config.refund_poll_seconds.max(1)),
            platform.shutdown.clone(),
        ));
        let ledger = metrics::LedgerMetrics::register(&platform.metrics.registry)?;
        platform.spawn(ledger.run(
            platform.db().clone(),
            Duration::from_secs(config.metrics_refresh_seconds.max(1)),
            platform.shutdown.clone(),
        ));
        let mut webhook_secrets = BTreeMap::new();
        if providers.get(provider::stripe::NAME).is_some() {
            webhook_secrets.insert(
                provider::stripe::NAME,
                WebhookSecrets::new(
                    &config.stripe.stripe_webhook_secrets,
                    Duration::from_secs(config.stripe.stripe_webhook_tolerance_seconds),
                ),
            );
        }
        platform.spawn(challenge::run_sweeper(
            platform.db().clone(),
            Duration::from_secs(config.challenge_sweep_seconds.max(1)),
            platform.shutdown.clone(),
        ));
        let (router, openapi) = http::router(http::AppState {
            db: platform.db().clone(),
            verifier: config.tokens.verifier(),
            providers,
            webhook_secrets: Arc::new(webhook_secrets),
            webhook_wake,
            refund_wake,
        });
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
