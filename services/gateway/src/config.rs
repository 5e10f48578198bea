//! The gateway's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig};

/// `tienda-gateway`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tienda-gateway", version, about = "Tienda's gateway")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub common: CommonConfig,

    /// How access tokens are checked.
    #[command(flatten)]
    pub tokens: TokenConfig,

    /// The local upstream table (`tienda up`): `component=url[|url...]` pairs separated by
    /// commas, e.g. `auth=http://127.0.0.1:3001,products=http://127.0.0.1:3002`.
    #[arg(long, env = "GATEWAY_UPSTREAMS", default_value = "")]
    pub upstreams: String,

    /// Longest wait for an upstream's answer to start, in seconds (default 30).
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30)]
    pub upstream_timeout_seconds: u64,
}
