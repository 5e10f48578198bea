use clap::Parser;
use tienda_gateway::{Application, config::Config};

// glibc's malloc was a fifth of the gateway's CPU under load (arena locks, consolidating the
// freed read buffers of every connection); mimalloc's thread-local free lists avoid both.
// Measured in docs/benchmarks.md ("Gateway").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let config = Config::parse();
    tienda_kit::telemetry::init(
        "gateway",
        config.common.log_format,
        &config.common.log_filter,
    );
    Application::build(config).await?.run_until_stopped().await
}
