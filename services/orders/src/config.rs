//! The orders service's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig};

/// `tienda-orders`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tienda-orders", version, about = "Tienda's orders service")]
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

    /// The products service's base URL, for prices at checkout (default
    /// http://127.0.0.1:3002, its port under `tienda up`).
    #[arg(long, env = "PRODUCTS_URL", default_value = "http://127.0.0.1:3002")]
    pub products_url: String,

    /// How long the saga waits for inventory to answer a reservation before it cancels the
    /// order as timed out, in milliseconds (default 30000).
    #[arg(long, env = "ORDERS_RESERVE_TIMEOUT_MS", default_value_t = 30_000)]
    pub reserve_timeout_ms: u64,

    /// How long the saga waits for payments to answer an authorization before it releases the
    /// stock and cancels the order, in milliseconds (default 60000). A 3-D Secure challenge
    /// extends it to the challenge's expiry.
    #[arg(long, env = "ORDERS_AUTHORIZE_TIMEOUT_MS", default_value_t = 60_000)]
    pub authorize_timeout_ms: u64,

    /// How long inventory holds an uncommitted reservation, in seconds (default 900): the
    /// backstop if a compensation is lost.
    #[arg(long, env = "ORDERS_RESERVATION_TTL_SECONDS", default_value_t = 900)]
    pub reservation_ttl_seconds: u64,

    /// How often overdue saga steps are looked for, in milliseconds (default 500).
    #[arg(long, env = "ORDERS_SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,
}
