//! The payments service's configuration.

use clap::{Parser, ValueEnum};
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig};

/// Which provider new payments go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderName {
    /// Built in, no network, Stripe's test PaymentMethod ids.
    Sandbox,
    /// Stripe's PaymentIntents (`STRIPE_SECRET_KEY` required).
    Stripe,
    /// PayPal's Orders v2 (`PAYPAL_CLIENT_ID` and `PAYPAL_CLIENT_SECRET` required).
    Paypal,
}

/// PayPal: where its API is and the app's credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct PayPalConfig {
    /// PayPal's API base URL (default its sandbox; live: `https://api-m.paypal.com`).
    #[arg(long, env = "PAYPAL_API_BASE", default_value = crate::provider::paypal::DEFAULT_API_BASE)]
    pub paypal_api_base: String,

    /// The REST app's client id. When set with the secret, PayPal is configured even if new
    /// payments go to another provider, so its payments can still be followed up.
    #[arg(long, env = "PAYPAL_CLIENT_ID")]
    pub paypal_client_id: Option<String>,

    /// The REST app's secret.
    #[arg(long, env = "PAYPAL_CLIENT_SECRET", hide_env_values = true)]
    pub paypal_client_secret: Option<String>,
}

/// Stripe: where its API is, the key, and the webhook secrets.
#[derive(Debug, Clone, clap::Args)]
pub struct StripeConfig {
    /// Stripe's API base URL (an emulator's in tests).
    #[arg(long, env = "STRIPE_API_BASE", default_value = crate::provider::stripe::DEFAULT_API_BASE)]
    pub stripe_api_base: String,

    /// The secret API key (`sk_test_…`, `sk_live_…`). When set, Stripe is configured even if
    /// new payments go to another provider, so its payments can still be followed up.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Webhook signing secrets (`whsec_…`), comma-separated; any of them verifies, so a secret
    /// is rotated by adding the new one, then removing the old once Stripe signs with the new.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub stripe_webhook_secrets: Vec<String>,

    /// How far a webhook signature's timestamp may be from now, in seconds (default 300).
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_SECONDS", default_value_t = 300)]
    pub stripe_webhook_tolerance_seconds: u64,
}

/// How invoices are issued (on capture; credit notes on refund).
#[derive(Debug, Clone, clap::Args)]
pub struct InvoiceConfig {
    /// The seller's name on invoices (default: the shop's name).
    #[arg(long, env = "INVOICE_SELLER_NAME")]
    pub invoice_seller_name: Option<String>,

    /// The seller's postal address, lines separated by `;`.
    #[arg(long, env = "INVOICE_SELLER_ADDRESS", default_value = "")]
    pub invoice_seller_address: String,

    /// The seller's country (ISO 3166-1 alpha-2).
    #[arg(long, env = "INVOICE_SELLER_COUNTRY")]
    pub invoice_seller_country: Option<String>,

    /// The seller's VAT or tax number.
    #[arg(long, env = "INVOICE_SELLER_TAX_ID")]
    pub invoice_seller_tax_id: Option<String>,

    /// The tax included in prices, in basis points (2100 = 21 %; default 0: none shown).
    #[arg(long, env = "INVOICE_TAX_RATE_BPS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub invoice_tax_rate_bps: u32,
}

/// `tienda-payments`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tienda-payments", version, about = "Tienda's payments service")]
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

    /// Stripe, when used.
    #[command(flatten)]
    pub stripe: StripeConfig,

    /// PayPal, when used.
    #[command(flatten)]
    pub paypal: PayPalConfig,

    /// Invoices.
    #[command(flatten)]
    pub invoices: InvoiceConfig,

    /// How often stored webhook events waiting for a retry are looked at, in seconds
    /// (default 5; a new event is processed at once).
    #[arg(long, env = "PAYMENTS_WEBHOOK_POLL_SECONDS", default_value_t = 5)]
    pub webhook_poll_seconds: u64,

    /// A CSV of IP address ranges and their countries (`first,last,country`, as DB-IP's free
    /// "IP to Country Lite"), for the fraud rules' country check; without one, the checkout's
    /// address has no country.
    #[arg(long, env = "PAYMENTS_GEOIP_CSV")]
    pub geoip_csv: Option<std::path::PathBuf>,

    /// How often refunds left pending at the provider are looked at, in seconds (default 10;
    /// each is asked about after 30 s, then ever less often, at most every six hours).
    #[arg(long, env = "PAYMENTS_REFUND_POLL_SECONDS", default_value_t = 10)]
    pub refund_poll_seconds: u64,

    /// How often the payment metrics are read from the ledger, in seconds (default 15).
    #[arg(long, env = "PAYMENTS_METRICS_REFRESH_SECONDS", default_value_t = 15)]
    pub metrics_refresh_seconds: u64,

    /// The provider new payments go to (default `sandbox`).
    #[arg(long, env = "PAYMENTS_PROVIDER", value_enum, default_value_t = ProviderName::Sandbox)]
    pub provider: ProviderName,

    /// Prefix of 3-D Secure action URLs, the shop's public address (e.g.
    /// `https://shop.example`); default empty: action URLs are paths on the gateway.
    #[arg(long, env = "PAYMENTS_PUBLIC_URL", default_value = "")]
    pub public_url: String,

    /// How long a 3-D Secure challenge stays open, in seconds (default 900).
    #[arg(long, env = "PAYMENTS_CHALLENGE_TTL_SECONDS", default_value_t = 900)]
    pub challenge_ttl_seconds: u64,

    /// How often lapsed 3-D Secure challenges nobody answered are declined, in seconds
    /// (default 30).
    #[arg(long, env = "PAYMENTS_CHALLENGE_SWEEP_SECONDS", default_value_t = 30)]
    pub challenge_sweep_seconds: u64,

    /// How long the sandbox's slow card (`pm_card_sandbox_slow`) takes to authorize, in
    /// milliseconds (default 3000).
    #[arg(long, env = "PAYMENTS_SANDBOX_SLOW_MS", default_value_t = 3000)]
    pub sandbox_slow_ms: u64,
}
