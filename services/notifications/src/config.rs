//! The notifications service's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig, policy::PolicyConfig};

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
}
