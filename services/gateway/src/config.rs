//! The gateway's configuration.

use clap::Parser;
use tienda_kit::{CommonConfig, TokenConfig};

pub use tienda_kit::policy::{PolicyConfig, PolicySource};

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

    /// Where policies come from, and the shop they resolve against.
    #[command(flatten)]
    pub policy: PolicyConfig,

    /// The local upstream table (`tienda up`): `component=url[|url...]` pairs separated by
    /// commas, e.g. `auth=http://127.0.0.1:3001,products=http://127.0.0.1:3002`. Empty in a
    /// cluster, where endpoints come from the EndpointSlices of the shop's Services.
    #[arg(long, env = "GATEWAY_UPSTREAMS", default_value = "")]
    pub upstreams: String,

    /// Longest wait for an upstream's answer to start when no CircuitPolicy sets a timeout,
    /// in seconds (default 30).
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_SECONDS", default_value_t = 30)]
    pub upstream_timeout_seconds: u64,

    /// Speak HTTP/2 (cleartext, prior knowledge) to upstreams: one multiplexed connection per
    /// endpoint instead of a pool of HTTP/1.1 ones. Every Tienda service accepts it (default
    /// false: HTTP/1.1 with keep-alive).
    #[arg(long, env = "GATEWAY_UPSTREAM_HTTP2", default_value_t = false)]
    pub upstream_http2: bool,

    /// How often policy files are checked for changes, in milliseconds (default 250).
    #[arg(long, env = "GATEWAY_POLICY_POLL_MS", default_value_t = 250)]
    pub policy_poll_ms: u64,

    /// Gateway replicas that share each rate limit (each enforces `requests / replicas`).
    /// In a cluster the operator sets it from the Shop (default 1).
    #[arg(long, env = "GATEWAY_REPLICAS", default_value_t = 1)]
    pub replicas: u32,

    /// Proxies whose `X-Forwarded-For` is believed, as CIDRs separated by commas (e.g. the
    /// ingress controller's pod network). Empty: the peer address is the client.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Per-route access rules as JSON: `[{"path_prefix": "/v1/orders", "methods": ["POST"],
    /// "access": "authenticated" | "public" | "role:admin"}]`; the first match decides, no
    /// match is public (the services check again). Default: none.
    #[arg(long, env = "GATEWAY_ACCESS_RULES", default_value = "[]")]
    pub access_rules: String,

    /// Per-route body limits over the common `MAX_BODY_BYTES` (1 MiB): `[METHOD ]PATH=SIZE`
    /// entries separated by commas, e.g. `POST /v1/products/import=64MiB,/v1/orders/bulk=4MiB`.
    /// A PATH covers itself and the paths below it; the longest matching path decides (at equal
    /// paths, the entry naming the method); SIZE is bytes or a `KiB`, `MiB`, `GiB` amount.
    /// Entries replace the built-in one for the same method and path and add the others.
    /// Built in: `POST /v1/products/import=64MiB` (the catalog import, streamed). Default: none.
    #[arg(long, env = "GATEWAY_BODY_LIMITS", default_value = "")]
    pub body_limits: String,

    /// Origins allowed by CORS, separated by commas (`*` for any). Empty: no CORS headers.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,

    /// Seconds between active health checks of every endpoint (`GET /readyz`); 0 disables
    /// (default 5).
    #[arg(long, env = "GATEWAY_HEALTH_CHECK_SECONDS", default_value_t = 5)]
    pub health_check_seconds: u64,

    /// Threads serving the public listener, each with a single-threaded runtime and its own
    /// upstream connection pool, so a proxied request never wakes another thread
    /// (docs/benchmarks.md "Gateway"). The default is one per core the process may use
    /// (its CPU quota included); 0 serves on the shared multi-threaded runtime.
    #[arg(long, env = "GATEWAY_SERVE_THREADS", default_value_t = cores())]
    pub serve_threads: usize,
}

/// The cores this process may use: the CPU set and cgroup quota included.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
