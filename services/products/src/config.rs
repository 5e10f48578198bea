//! The products service's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig};

/// `tienda-products`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tienda-products", version, about = "Tienda's products service")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub common: CommonConfig,

    /// How access tokens are checked.
    #[command(flatten)]
    pub tokens: TokenConfig,

    /// Products kept in the read cache (default 100,000).
    #[arg(long, env = "PRODUCTS_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,

    /// Longest a cached product lives, in seconds, should an invalidation be missed
    /// (default 300).
    #[arg(long, env = "PRODUCTS_CACHE_TTL_SECONDS", default_value_t = 300)]
    pub cache_ttl_seconds: u64,

    /// Largest import body, in bytes (default 64 MiB).
    #[arg(long, env = "PRODUCTS_IMPORT_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub import_max_bytes: usize,

    /// Most rows one import takes (default 50,000).
    #[arg(long, env = "PRODUCTS_IMPORT_MAX_ROWS", default_value_t = 50_000)]
    pub import_max_rows: usize,

    /// How often expired reservations are released, in milliseconds (default 1000).
    #[arg(long, env = "PRODUCTS_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub sweep_interval_ms: u64,
}
