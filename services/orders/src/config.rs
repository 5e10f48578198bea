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
    /// stock, voids the payment and cancels the order, in milliseconds (default 60000). A 3-D
    /// Secure challenge extends it to the challenge's expiry; neither outlives the reservation.
    #[arg(long, env = "ORDERS_AUTHORIZE_TIMEOUT_MS", default_value_t = 60_000)]
    pub authorize_timeout_ms: u64,

    /// How long inventory holds an uncommitted reservation, in seconds (default 900): the
    /// backstop if a compensation is lost.
    #[arg(long, env = "ORDERS_RESERVATION_TTL_SECONDS", default_value_t = 900)]
    pub reservation_ttl_seconds: u64,

    /// How long before the reservation expires the payment steps give up (a 3-D Secure
    /// challenge included), leaving time to commit the stock, in milliseconds (default 60000).
    #[arg(long, env = "ORDERS_COMMIT_MARGIN_MS", default_value_t = 60_000)]
    pub commit_margin_ms: u64,

    /// How often a commit or a compensation (void, release) that got no answer is sent again,
    /// in milliseconds (default 30000).
    #[arg(long, env = "ORDERS_RESEND_INTERVAL_MS", default_value_t = 30_000)]
    pub resend_interval_ms: u64,

    /// The deadline given to compensating commands (voids), in seconds (default 86400): they
    /// must get through even after an outage.
    #[arg(
        long,
        env = "ORDERS_COMPENSATION_DEADLINE_SECONDS",
        default_value_t = 86_400
    )]
    pub compensation_deadline_seconds: u64,

    /// How long after a retryable authorization failure (provider unavailable) it is sent
    /// again, within the step's deadline, in milliseconds (default 2000).
    #[arg(long, env = "ORDERS_AUTHORIZE_RETRY_MS", default_value_t = 2_000)]
    pub authorize_retry_ms: u64,

    /// How often overdue saga steps are looked for, in milliseconds (default 500).
    #[arg(long, env = "ORDERS_SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,

    /// How long after placing an order its customer may still cancel it (while it is not
    /// shipped), in seconds (default 1800). Admins may cancel any time before delivery.
    #[arg(long, env = "ORDERS_CANCEL_WINDOW_SECONDS", default_value_t = 1_800)]
    pub cancel_window_seconds: u64,

    /// How long after delivery its customer may return an order, in days (default 30).
    /// Admins may record a return any time after delivery.
    #[arg(long, env = "ORDERS_RETURN_WINDOW_DAYS", default_value_t = 30)]
    pub return_window_days: u64,
}
