//! The auth service's configuration: the common flags plus token and key settings.

use clap::Parser;
use tienda_kit::{CommonConfig, Secret, policy::PolicyConfig};

/// `tienda-auth`.
#[derive(Debug, Clone, Parser)]
#[command(name = "tienda-auth", version, about = "Tienda's auth service")]
pub struct Config {
    /// Flags every service takes.
    #[command(flatten)]
    pub common: CommonConfig,

    /// Where CircuitPolicies come from: calls to OpenID providers (`{kind: External, name:
    /// <provider>}`) go through the kit's outbound client, which applies them.
    #[command(flatten)]
    pub policy: PolicyConfig,

    /// `iss` of the tokens; also what other services expect (default http://127.0.0.1:3001).
    #[arg(long, env = "AUTH_ISSUER", default_value = "http://127.0.0.1:3001")]
    pub issuer: String,

    /// `aud` of the access tokens (default `tienda`).
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "tienda")]
    pub audience: String,

    /// Access-token lifetime in seconds, at most 900 (default 600).
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u32).range(30..=900))]
    pub access_token_ttl_seconds: u32,

    /// Refresh-token lifetime in seconds (default 30 days).
    #[arg(long, env = "AUTH_REFRESH_TOKEN_TTL_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_seconds: u32,

    /// How long a signing key signs before a new one takes over, in seconds (default 30 days).
    #[arg(long, env = "AUTH_KEY_ROTATION_SECONDS", default_value_t = 30 * 24 * 3600)]
    pub key_rotation_seconds: u32,

    /// 32 bytes, base64: encrypts the signing keys at rest. Every replica needs the same one;
    /// the operator puts it in the service's Secret.
    #[arg(long, env = "AUTH_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Secret<String>,

    /// The shop's event-sealing keys: base64 of 32 random bytes each, comma-separated, the
    /// first sealing. Reset and verification tokens travel in events sealed with them, so the
    /// streams never hold a working link in clear; notifications gets the same keys to open
    /// them. The operator keeps them in the `<shop>-keys` Secret, `tienda up` in secrets.json.
    #[arg(long, env = "EVENT_SEALING_KEYS", hide_env_values = true)]
    pub event_sealing_keys: Secret<String>,

    /// OpenID Connect providers, a JSON array of `{name, issuer, client_id, client_secret?,
    /// redirect_uri?, scopes?}` (default: none). `redirect_uri` defaults to
    /// `<AUTH_ISSUER>/v1/auth/oidc/<name>/callback`.
    #[arg(
        long,
        env = "AUTH_OIDC_PROVIDERS",
        default_value = "[]",
        hide_env_values = true
    )]
    pub oidc_providers: String,

    /// Email of the first admin account, created at start when absent.
    #[arg(long, env = "TIENDA_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of the first admin account.
    #[arg(long, env = "TIENDA_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret<String>>,

    /// Memory, in MiB, that password hashing may use at once (default 128): each Argon2id hash
    /// takes 19 MiB, so this bounds how many run together (at least one). Requests that find
    /// no room within AUTH_HASHING_WAIT_MS are answered 503 with `Retry-After`, so a burst of
    /// sign-ins or registrations cannot exhaust the process's memory limit.
    #[arg(long, env = "AUTH_HASHING_MEMORY_MIB", default_value_t = 128)]
    pub hashing_memory_mib: u32,

    /// How long a request waits for room to hash before the 503, in milliseconds (default 1000).
    #[arg(long, env = "AUTH_HASHING_WAIT_MS", default_value_t = 1000)]
    pub hashing_wait_ms: u64,
}
