//! Configuration every service shares; each service flattens [`CommonConfig`] into its own
//! `clap::Parser` struct. Every field is a flag and an environment variable, so the same
//! binary runs from a Deployment (env), `tienda up` (env) and a terminal (flags).

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};

use crate::secret::Secret;

/// What every service needs to start.
#[derive(Debug, Clone, Args)]
pub struct CommonConfig {
    /// Address the HTTP API listens on. Port 0 picks a free port (tests).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    /// Address of the admin listener (default 0.0.0.0:9090): `/metrics`, `/policies`, the
    /// dead-letter admin API and every other operator-only endpoint, never routed by the
    /// gateway; `/livez` and `/readyz` answer on both. Port 0 picks a free port (tests).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,

    /// PostgreSQL connection URL of the service's own database (the operator puts it in the
    /// service's Secret). Services without a database ignore it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    /// Largest number of pooled database connections per process (default 10).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// NATS server URL(s), comma-separated (default nats://127.0.0.1:4222).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS credentials file (JWT + seed); anonymous when absent.
    #[arg(long, env = "NATS_CREDS_FILE")]
    pub nats_creds_file: Option<std::path::PathBuf>,

    /// A name for this process that `/readyz` echoes in its `Tienda-Instance` header, so the
    /// supervisor that started it (`tienda up`) can tell its own process from another program
    /// answering on the same port. Unset under Kubernetes, whose probes reach the pod itself.
    #[arg(long, env = "TIENDA_INSTANCE")]
    pub instance: Option<String>,

    /// Log line format: `json` (default, one object per line) or `pretty` (for a terminal).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` env-filter syntax (default `info`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Seconds to finish in-flight requests and consumers after SIGTERM before exiting
    /// (default 25, under Kubernetes' 30 s grace period).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 25)]
    pub shutdown_timeout_seconds: u64,

    /// Largest request body accepted, in bytes (default 1 MiB).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Longest time a client may take to send a request's headers, in seconds (default 10):
    /// connections that trickle headers (slowloris) are closed after it.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub header_read_timeout_seconds: u64,

    /// Largest header section of a request, in bytes (default 32 KiB; at least 8 KiB).
    #[arg(long, env = "HTTP_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in one request (default 100).
    #[arg(long, env = "HTTP_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Peers whose word on the client's address (`X-Real-IP`, set by the gateway) is
    /// believed, as CIDRs or addresses separated by commas (default: loopback and the private
    /// ranges, where a shop's gateway runs). Per-client limits, such as auth's sign-in
    /// throttle, key on that address; from any other peer the peer itself is the client.
    /// (The flag is `--service-trusted-proxies`: the gateway has its own `--trusted-proxies`.)
    #[arg(
        id = "service_trusted_proxies",
        long = "service-trusted-proxies",
        env = "TRUSTED_PROXIES",
        default_value = crate::net::DEFAULT_TRUSTED_PROXIES
    )]
    pub trusted_proxies: String,
}

impl CommonConfig {
    /// The drain deadline.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with span fields (for collectors).
    Json,
    /// Human-readable, coloured (for a terminal).
    Pretty,
}

/// How a service checks access tokens: flattened into the configuration of every service
/// that has authenticated routes.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenConfig {
    /// auth's JWKS (default http://127.0.0.1:3001/.well-known/jwks.json).
    #[arg(
        long = "auth-jwks-url",
        env = "AUTH_JWKS_URL",
        default_value = "http://127.0.0.1:3001/.well-known/jwks.json"
    )]
    pub jwks_url: String,

    /// The `iss` tokens must carry: auth's AUTH_ISSUER (default http://127.0.0.1:3001).
    #[arg(
        long = "auth-issuer",
        env = "AUTH_ISSUER",
        default_value = "http://127.0.0.1:3001"
    )]
    pub issuer: String,

    /// The `aud` tokens must include (default `tienda`).
    #[arg(
        long = "auth-audience",
        env = "AUTH_AUDIENCE",
        default_value = "tienda"
    )]
    pub audience: String,
}

impl TokenConfig {
    /// A verifier for these settings (JWKS refetched at most every 5 s; 30 s clock leeway).
    pub fn verifier(&self) -> crate::jwt::Verifier {
        crate::jwt::Verifier::new(crate::jwt::VerifierConfig {
            jwks_url: self.jwks_url.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            min_refresh_interval: std::time::Duration::from_secs(5),
            leeway_seconds: 30,
        })
    }
}
