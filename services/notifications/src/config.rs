//! The notifications service's configuration.

use std::path::PathBuf;

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig, secret::Secret};

use crate::locale::Locale;

fn parse_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    crate::quiet::zone(name)
        .ok_or_else(|| format!("{name:?} is not an IANA time zone (like Europe/Madrid)"))
}

/// `tienda-notifications`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tienda-notifications",
    version,
    about = "Tienda's notifications service"
)]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub common: CommonConfig,

    /// How access tokens are checked.
    #[command(flatten)]
    pub tokens: TokenConfig,

    /// Where CircuitPolicies for the calls this service makes come from.
    #[command(flatten)]
    pub policy: PolicyConfig,

    /// The mail server: `smtp://host:port` (plain, for local catchers), `smtp://host?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host` (TLS). Unset: every message is written as an
    /// `.eml` file under `--outbox-dir` instead, and its path logged.
    #[arg(long, env = "TIENDA_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<Secret<String>>,

    /// The mail server's host, as a Shop's `notifications.smtp` gives it (instead of
    /// `TIENDA_SMTP_URL`; not both).
    #[arg(long, env = "TIENDA_SMTP_HOST")]
    pub smtp_host: Option<String>,

    /// Its port (default by `--smtp-tls`: 587, 465 or 25).
    #[arg(long, env = "TIENDA_SMTP_PORT")]
    pub smtp_port: Option<u16>,

    /// `starttls` (default), `tls` or `none`.
    #[arg(long, env = "TIENDA_SMTP_TLS", default_value = "starttls",
          value_parser = ["starttls", "tls", "none"])]
    pub smtp_tls: String,

    /// The SMTP user.
    #[arg(long, env = "TIENDA_SMTP_USERNAME")]
    pub smtp_username: Option<String>,

    /// Its password.
    #[arg(long, env = "TIENDA_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<Secret<String>>,

    /// Where messages go when no SMTP server is set (default `.tienda/notifications/outbox`
    /// under the working directory, next to `tienda up`'s other data).
    #[arg(
        long,
        env = "NOTIFICATIONS_OUTBOX_DIR",
        default_value = ".tienda/notifications/outbox"
    )]
    pub outbox_dir: PathBuf,

    /// The `From` of every message.
    #[arg(
        long,
        env = "NOTIFICATIONS_MAIL_FROM",
        default_value = "Tienda <no-reply@tienda.localhost>"
    )]
    pub mail_from: String,

    /// The shop's event-sealing keys (base64 of 32 bytes each, comma-separated), the same as
    /// auth's: password-reset and verification links arrive sealed with them. Without them
    /// those events cannot be opened and go to the dead letter with that reason.
    #[arg(long, env = "EVENT_SEALING_KEYS", hide_env_values = true)]
    pub event_sealing_keys: Option<Secret<String>>,

    /// The shop's public address (the gateway): unsubscribe and password-reset links start
    /// with it (default the gateway under `tienda up`).
    #[arg(
        long,
        env = "NOTIFICATIONS_PUBLIC_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    pub public_url: String,

    /// The shop's name as messages sign off (default `Tienda`). Not `TIENDA_SHOP`, which is the
    /// Shop resource's name (`local`, `acme`), not what customers read.
    #[arg(long, env = "NOTIFICATIONS_SHOP_NAME", default_value = "Tienda")]
    pub shop_name: String,

    /// The language of messages to people who chose none (`es` or `en`; default `en`).
    #[arg(long, env = "NOTIFICATIONS_DEFAULT_LOCALE", default_value = "en")]
    pub default_locale: Locale,

    /// The time zone of people who chose none, for their quiet hours (IANA; default `UTC`).
    #[arg(long, env = "NOTIFICATIONS_DEFAULT_TIMEZONE", default_value = "UTC",
          value_parser = parse_zone)]
    pub default_timezone: chrono_tz::Tz,

    /// Attempts per message before it is marked failed (default 5).
    #[arg(long, env = "NOTIFICATIONS_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// First retry delay ceiling in milliseconds; doubles per attempt (default 1000).
    #[arg(long, env = "NOTIFICATIONS_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,

    /// Largest retry delay ceiling in milliseconds (default 300000, 5 min).
    #[arg(long, env = "NOTIFICATIONS_RETRY_MAX_MS", default_value_t = 300_000)]
    pub retry_max_ms: u64,

    /// Secrets the mail provider signs its callbacks with (Standard Webhooks, `whsec_…`),
    /// comma-separated: rotate by adding the new one first. None: `POST
    /// /v1/notifications/callbacks/email` answers 404.
    #[arg(
        long,
        env = "NOTIFICATIONS_CALLBACK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub callback_secrets: Vec<Secret<String>>,

    /// Whether webhook endpoints may resolve to private, loopback or link-local addresses (a
    /// receiver inside the cluster, a local run). Off: such a delivery fails at once, naming
    /// the address (server-side request forgery).
    #[arg(long, env = "NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub webhooks_allow_private: bool,

    /// How long a webhook receiver may take to answer, in milliseconds (default 10000).
    #[arg(
        long,
        env = "NOTIFICATIONS_WEBHOOK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub webhook_timeout_ms: u64,

    /// How often the delivery metrics are read from the database, in seconds (default 15).
    #[arg(
        long,
        env = "NOTIFICATIONS_METRICS_REFRESH_SECONDS",
        default_value_t = 15
    )]
    pub metrics_refresh_seconds: u64,

    /// SMS providers in the order they are tried (the next when one's circuit is open);
    /// those without credentials are left out. None configured: texts are written as
    /// `.sms.json` files next to the `.eml` files.
    #[arg(
        long,
        env = "NOTIFICATIONS_SMS_PROVIDERS",
        value_delimiter = ',',
        default_value = "twilio,vonage"
    )]
    pub sms_providers: Vec<String>,

    /// Calling codes phone numbers may have (`+34,+351`); empty: any. Numbers elsewhere are
    /// refused when set, which keeps SMS pumping to far-away premium numbers out.
    #[arg(long, env = "NOTIFICATIONS_SMS_COUNTRIES", value_delimiter = ',')]
    pub sms_countries: Vec<String>,

    /// Twilio.
    #[command(flatten)]
    pub twilio: TwilioConfig,

    /// Vonage.
    #[command(flatten)]
    pub vonage: VonageConfig,

    /// Push providers in the order they are tried; those not configured are left out. None
    /// configured: notifications are written as `.push.json` files.
    #[arg(
        long,
        env = "NOTIFICATIONS_PUSH_PROVIDERS",
        value_delimiter = ',',
        default_value = "fcm,webpush"
    )]
    pub push_providers: Vec<String>,

    /// Firebase Cloud Messaging.
    #[command(flatten)]
    pub fcm: FcmConfig,

    /// Web Push.
    #[command(flatten)]
    pub webpush: WebPushConfig,

    /// How long a message being sent stays claimed, in seconds (default 60): after a crash,
    /// the delay before it is sent again. Keep it above the longest send (SMTP waits 30 s,
    /// webhooks `NOTIFICATIONS_WEBHOOK_TIMEOUT_MS`, providers their CircuitPolicy timeout).
    #[arg(long, env = "NOTIFICATIONS_CLAIM_LEASE_SECONDS", default_value_t = 60)]
    pub claim_lease_seconds: u64,

    /// Messages the delivery worker has in flight at once (default 8).
    #[arg(long, env = "NOTIFICATIONS_SEND_CONCURRENCY", default_value_t = 8)]
    pub send_concurrency: usize,

    /// How often the delivery worker looks for due messages when not woken by a new one, in
    /// milliseconds (default 1000).
    #[arg(long, env = "NOTIFICATIONS_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
}

/// Twilio's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct TwilioConfig {
    /// The account SID (`AC…`); set with the token to send by Twilio.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// The auth token.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret<String>>,
    /// The sender: a number (E.164) or a Messaging Service SID (`MG…`).
    #[arg(long, env = "TWILIO_FROM")]
    pub twilio_from: Option<String>,
    /// The API's address.
    #[arg(long, env = "TWILIO_API_URL", default_value = "https://api.twilio.com")]
    pub twilio_api_url: String,
}

/// Vonage's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct VonageConfig {
    /// The API key; set with the secret to send by Vonage.
    #[arg(long, env = "VONAGE_API_KEY")]
    pub vonage_api_key: Option<String>,
    /// The API secret.
    #[arg(long, env = "VONAGE_API_SECRET", hide_env_values = true)]
    pub vonage_api_secret: Option<Secret<String>>,
    /// The sender (a number or up to 11 letters).
    #[arg(long, env = "VONAGE_FROM", default_value = "Tienda")]
    pub vonage_from: String,
    /// The API's address.
    #[arg(long, env = "VONAGE_API_URL", default_value = "https://rest.nexmo.com")]
    pub vonage_api_url: String,
}

/// FCM's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct FcmConfig {
    /// The Firebase service account's key file (JSON, as the console downloads it).
    #[arg(long, env = "FCM_CREDENTIALS_FILE")]
    pub fcm_credentials_file: Option<PathBuf>,
    /// The key file's contents instead of its path (a Shop passes it from a Secret).
    #[arg(long, env = "FCM_CREDENTIALS_JSON", hide_env_values = true)]
    pub fcm_credentials_json: Option<Secret<String>>,
    /// The API's address.
    #[arg(
        long,
        env = "FCM_API_URL",
        default_value = "https://fcm.googleapis.com"
    )]
    pub fcm_api_url: String,
}

/// Web Push's VAPID key.
#[derive(Debug, Clone, clap::Args)]
pub struct WebPushConfig {
    /// The VAPID private key: the 32-byte P-256 scalar in base64url (`npx web-push
    /// generate-vapid-keys` prints one).
    #[arg(long, env = "WEBPUSH_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub webpush_vapid_private_key: Option<Secret<String>>,
    /// How push services reach the shop's operators (`mailto:ops@shop.example`).
    #[arg(
        long,
        env = "WEBPUSH_VAPID_SUBJECT",
        default_value = "mailto:ops@tienda.localhost"
    )]
    pub webpush_vapid_subject: String,
    /// The push services subscriptions may point at (`*.` for subdomains); the browsers'
    /// services by default. Nothing else is ever called with a client's endpoint.
    #[arg(long, env = "WEBPUSH_ALLOWED_HOSTS", value_delimiter = ',',
          default_value = crate::channel::push::PUSH_SERVICES)]
    pub webpush_allowed_hosts: Vec<String>,
}
