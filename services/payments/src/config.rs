//! The payments service's configuration.

use clap::{Parser, ValueEnum};
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig};

/// Which provider new payments go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderName {
    /// Built in, no network, Stripe's test PaymentMethod ids (the only one built so far).
    Sandbox,
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
