use clap::Parser;
use tienda_orders::{Application, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let config = Config::parse();
    tienda_kit::telemetry::init(
        "orders",
        config.common.log_format,
        &config.common.log_filter,
    );
    Application::build(config).await?.run_until_stopped().await
}
