use clap::Parser;
use tienda_auth::{Application, config::Config};

/// mimalloc, not glibc's malloc: each Argon2id hash allocates 19 MiB and frees it, and glibc
/// keeps such freed blocks in its per-thread arenas (its mmap threshold rises after the first
/// one is freed), so auth idled at 36-50 MiB after a few sign-ins. mimalloc returns them.
/// Built with `no_thp` (Cargo.toml): otherwise mimalloc asks for transparent huge pages on its
/// arena, and every 2 MiB page it touches stays resident — 16.8 MiB of anonymous memory idle,
/// 9 MiB without.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tienda_kit::install_crypto_provider();
    let config = Config::parse();
    tienda_kit::telemetry::init("auth", config.common.log_format, &config.common.log_filter);
    Application::build(config).await?.run_until_stopped().await
}
