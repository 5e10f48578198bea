//! Tienda's notifications service: user, order and payment events become email in the
//! recipient's language, sent after commit with retries and tracked per delivery; people
//! choose what they get (critical messages always go) and leave a category with one click.
//!
//! # Layout
//! - [`config`]: flags and environment
//! - [`events`]: the consumer handler: events → delivery rows, in the inbox's transaction
//! - [`trigger`]: what each event becomes (kind, recipient, template values)
//! - [`category`]: message categories and the opt-out rule
//! - [`locale`]: languages, and money as each writes it
//! - [`templates`]: subject, text and HTML templates per kind and locale (minijinja)
//! - [`channel`]: composing mail and handing it to SMTP or `.eml` files
//! - [`worker`]: the delivery worker: send, retry with backoff, record
//! - [`deliveries`], [`preferences`], [`contacts`]: their SQL
//! - [`unsubscribe`]: signed one-click unsubscribe tokens
//! - [`http`]: the API; [`error`]: errors as problem documents

pub mod campaigns;
pub mod category;
pub mod channel;
pub mod config;
pub mod contacts;
pub mod deliveries;
pub mod devices;
pub mod digests;
pub mod error;
pub mod events;
pub mod http;
pub mod locale;
pub mod metrics;
pub mod phone;
pub mod preferences;
pub mod quiet;
pub mod template_store;
pub mod templates;
pub mod tracking;
pub mod trigger;
pub mod unsubscribe;
pub mod webhooks;
pub mod worker;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tienda_kit::{
    Needs, Platform, consumer::ConsumerConfig, dead_letter::DeadLetters, outbox::RelayConfig,
    resilience::Backoff,
};

use crate::{
    channel::{
        Mailer,
        eml::EmlOutbox,
        provider::{Failover, Provider},
        push::{Fcm, PushMessage, PushSender, WebPush},
        sms::{SmsMessage, SmsSender, Twilio, Vonage},
        smtp::Smtp,
    },
    config::Config,
    templates::Templates,
    trigger::Links,
    unsubscribe::Signer,
    worker::{RetryPolicy, Worker},
};

/// The `source` of every envelope notifications writes.
pub const SOURCE: &str = "notifications";

/// The migrations of the notifications database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The durable consumers (provisioned by the operator), with their streams.
pub const CONSUMERS: [(&str, &str); 3] = [
    ("USER", "notifications-user-events"),
    ("ORDER", "notifications-order-events"),
    ("PAYMENT", "notifications-payment-events"),
];

/// The SMS and push senders from the configuration, in the configured order, and Web Push
/// when configured (devices are checked against it).
fn channels(
    config: &Config,
    outbound: &tienda_kit::outbound::Outbound,
    db: &sqlx::PgPool,
) -> anyhow::Result<(SmsSender, PushSender, Option<Arc<WebPush>>)> {
    let mut sms: Vec<Box<dyn Provider<SmsMessage>>> = Vec::new();
    for name in &config.sms_providers {
        match name.trim() {
            "twilio" => {
                let t = &config.twilio;
                match (&t.twilio_account_sid, &t.twilio_auth_token, &t.twilio_from) {
                    (Some(sid), Some(token), Some(from)) => sms.push(Box::new(Twilio {
                        base_url: t.twilio_api_url.clone(),
                        account_sid: sid.clone(),
                        auth_token: token.expose().clone(),
                        from: from.clone(),
                    })),
                    (None, None, _) => {}
                    _ => anyhow::bail!(
                        "Twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM together"
                    ),
                }
            }
            "vonage" => {
                let v = &config.vonage;
                match (&v.vonage_api_key, &v.vonage_api_secret) {
                    (Some(key), Some(secret)) => sms.push(Box::new(Vonage {
                        base_url: v.vonage_api_url.clone(),
                        api_key: key.clone(),
                        api_secret: secret.expose().clone(),
                        from: v.vonage_from.clone(),
                    })),
                    (None, None) => {}
                    _ => {
                        anyhow::bail!("Vonage needs VONAGE_API_KEY and VONAGE_API_SECRET together")
                    }
                }
            }
            "" => {}
            other => anyhow::bail!(
                "NOTIFICATIONS_SMS_PROVIDERS names {other:?}; the SMS providers are twilio and vonage"
            ),
        }
    }
    let mut push: Vec<Box<dyn Provider<PushMessage>>> = Vec::new();
    let mut webpush = None;
    for name in &config.push_providers {
        match name.trim() {
            "fcm" => match (
                &config.fcm.fcm_credentials_file,
                &config.fcm.fcm_credentials_json,
            ) {
                (Some(_), Some(_)) => anyhow::bail!(
                    "both FCM_CREDENTIALS_FILE and FCM_CREDENTIALS_JSON are set: give the key one way"
                ),
                (Some(path), None) => {
                    push.push(Box::new(Fcm::from_file(
                        config.fcm.fcm_api_url.clone(),
                        path,
                    )?));
                }
                (None, Some(json)) => {
                    let account = serde_json::from_str(json.expose()).map_err(|e| {
                        anyhow::anyhow!("FCM_CREDENTIALS_JSON is not a service account key: {e}")
                    })?;
                    push.push(Box::new(Fcm::new(config.fcm.fcm_api_url.clone(), account)?));
                }
                (None, None) => {}
            },
            "webpush" => {
                if let Some(key) = &config.webpush.webpush_vapid_private_key {
                    let w = Arc::new(WebPush::new(
                        key.expose(),
                        &config.webpush.webpush_vapid_subject,
                        config.webpush.webpush_allowed_hosts.clone(),
                    )?);
                    webpush = Some(w.clone());
                    push.push(Box::new(SharedWebPush(w)));
                }
            }
            "" => {}
            other => anyhow::bail!(
                "NOTIFICATIONS_PUSH_PROVIDERS names {other:?}; the push providers are fcm and webpush"
            ),
        }
    }
    for (what, names) in [
        ("SMS", sms.iter().map(|p| p.name()).collect::<Vec<_>>()),
        ("push", push.iter().map(|p| p.name()).collect()),
    ] {
        if names.is_empty() {
            tracing::info!(dir = %config.outbox_dir.display(),
                "no {what} provider configured: {what} messages are written as files");
        } else {
            tracing::info!(providers = ?names, "{what} providers, in failover order");
        }
    }
    Ok((
        SmsSender {
            db: db.clone(),
            providers: Failover::new(sms, outbound.clone()),
            outbox: config.outbox_dir.clone(),
        },
        PushSender {
            db: db.clone(),
            providers: Failover::new(push, outbound.clone()),
            outbox: config.outbox_dir.clone(),
        },
        webpush,
    ))
}

/// Web Push shared between the sender and the API (which checks subscriptions with it).
struct SharedWebPush(Arc<WebPush>);

impl Provider<PushMessage> for SharedWebPush {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn send<'a>(
        &'a self,
        outbound: &'a tienda_kit::outbound::Outbound,
        message: &'a PushMessage,
    ) -> crate::channel::provider::Sending<'a> {
        self.0.send(outbound, message)
    }
}

/// A built notifications service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, starts the relay, the consumers and the delivery worker, binds.
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
        let templates = Arc::new(Templates::builtin().context("compiling the templates")?);
        let signer = Signer::load(&mut *platform.db().acquire().await?)
            .await
            .context("loading the unsubscribe key")?;
        let mailer = match (&config.smtp_url, &config.smtp_host) {
            (Some(_), Some(_)) => anyhow::bail!(
                "both TIENDA_SMTP_URL and TIENDA_SMTP_HOST are set: give the mail server one way"
            ),
            (Some(url), None) => Mailer::Smtp(Smtp::from_url(url.expose())?),
            (None, Some(host)) => {
                let credentials = match (&config.smtp_username, &config.smtp_password) {
                    (Some(user), Some(password)) => Some((user.clone(), password.expose().clone())),
                    (None, None) => None,
                    _ => anyhow::bail!(
                        "TIENDA_SMTP_USERNAME and TIENDA_SMTP_PASSWORD go together: set both or neither"
                    ),
                };
                Mailer::Smtp(Smtp::from_parts(&crate::channel::smtp::SmtpParts {
                    host,
                    port: config.smtp_port,
                    tls: &config.smtp_tls,
                    credentials,
                })?)
            }
            (None, None) => {
                let outbox = EmlOutbox::new(config.outbox_dir.clone());
                tracing::info!(dir = %outbox.dir().display(),
                    "no TIENDA_SMTP_URL: mail is written as .eml files");
                Mailer::Outbox(outbox)
            }
        };
        let from = config
            .mail_from
            .parse()
            .with_context(|| format!("--mail-from {:?} is not an address", config.mail_from))?;
        let links = Links {
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            shop: config.shop_name.clone(),
        };
        platform.start_relay(RelayConfig::default())?;
        let sealer = match &config.event_sealing_keys {
            Some(keys) => Some(Arc::new(
                tienda_kit::seal::Sealer::from_config(keys.expose())
                    .context("reading EVENT_SEALING_KEYS")?,
            )),
            None => {
                tracing::warn!(
                    "EVENT_SEALING_KEYS is not set: password-reset and email-verification \
                     links cannot be opened and will be dead-lettered; give notifications \
                     the same keys as auth"
                );
                None
            }
        };
        let handler = events::Notify {
            sealer,
            templates: templates.clone(),
            links: links.clone(),
            signer: signer.clone(),
            default_locale: config.default_locale,
            default_timezone: config.default_timezone,
        };
        for (stream, durable) in CONSUMERS {
            platform.start_consumer(
                ConsumerConfig {
                    // Everything an event leads to (deliveries, contacts, webhook deliveries)
                    // is written in the consumer's transaction, so whatever has arrived is
                    // applied in one: at 50 checkouts/s this saved a transaction, its commit and
                    // an inbox insert per event (docs/benchmarks.md, "Checkout").
                    batch: 32,
                    concurrency: 1,
                    ..ConsumerConfig::new(SOURCE, stream, durable)
                },
                handler.clone(),
            )?;
        }
        let outbound = tienda_kit::outbound::Outbound::start(&platform, &config.policy).await?;
        let (sms, push, webpush) = channels(&config, &outbound, platform.db())?;
        let worker = Worker {
            sms: Arc::new(sms),
            push: Arc::new(push),
            policies: outbound.policies().clone(),
            webhooks: webhooks::WebhookSender {
                db: platform.db().clone(),
                allow_private: config.webhooks_allow_private,
                timeout: Duration::from_millis(config.webhook_timeout_ms.max(100)),
            },
            db: platform.db().clone(),
            mailer: Arc::new(mailer),
            from,
            retry: RetryPolicy {
                max_attempts: config.max_attempts.max(1),
                backoff: Backoff::new(
                    Duration::from_millis(config.retry_base_ms),
                    Duration::from_millis(config.retry_max_ms),
                ),
            },
            poll: Duration::from_millis(config.poll_interval_ms.max(10)),
            concurrency: config.send_concurrency.clamp(1, 256),
            lease: Duration::from_secs(config.claim_lease_seconds.max(5)),
        };
        platform.spawn(worker.run(platform.shutdown.clone()));
        let runner = campaigns::Runner {
            db: platform.db().clone(),
            signer: signer.clone(),
            links: links.clone(),
            default_locale: config.default_locale,
            default_timezone: config.default_timezone,
            poll: Duration::from_millis(config.poll_interval_ms.max(10)),
        };
        platform.spawn(runner.run(platform.shutdown.clone()));
        let closer = digests::Closer {
            db: platform.db().clone(),
            templates: templates.clone(),
            signer: signer.clone(),
            links: links.clone(),
            default_timezone: config.default_timezone,
            poll: Duration::from_millis(config.poll_interval_ms.max(10)),
        };
        platform.spawn(closer.run(platform.shutdown.clone()));
        let gauges = metrics::DeliveryMetrics::register(&platform.metrics.registry)?;
        platform.spawn(gauges.run(
            platform.db().clone(),
            Duration::from_secs(config.metrics_refresh_seconds.max(1)),
            platform.shutdown.clone(),
        ));
        let callback_secrets = config
            .callback_secrets
            .iter()
            .map(|secret| standardwebhooks::Webhook::new(secret.expose().trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                anyhow::anyhow!(
                    "NOTIFICATIONS_CALLBACK_SECRETS: {e} (each is whsec_ followed by base64)"
                )
            })?;
        let (router, openapi) = http::router(http::AppState {
            db: platform.db().clone(),
            verifier: config.tokens.verifier(),
            signer,
            callback_secrets: Arc::new(http::CallbackSecrets(callback_secrets)),
            templates,
            links,
            webpush,
            default_locale: config.default_locale,
            sms_countries: Arc::new(
                config
                    .sms_countries
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect(),
            ),
        });
        // Operators inspect, replay or discard the events this service gave up on.
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
