//! The payments service's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig};

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
}
