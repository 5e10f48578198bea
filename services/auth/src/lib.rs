//! Tienda's auth service: accounts with Argon2id passwords, EdDSA access tokens with `kid` that
//! every other service verifies alone against the JWKS, and refresh tokens that rotate on use
//! and revoke their whole session when one is presented twice.
//!
//! # Layout
//! - [`account`]: registration's rules
//! - [`config`]: flags and environment
//! - [`http`]: the API (accounts, JWKS)
//! - [`keys`]: signing keys, encrypted at rest, rotated
//! - [`lockout`]: the sign-in throttle: failures per account from one client and per client
//! - [`mfa`]: TOTP and recovery codes
//! - [`oidc`]: OpenID Connect providers
//! - [`password`]: policy (zxcvbn) and Argon2id
//! - [`role`]: the roles an account holds and the scopes they grant
//! - [`rotation`]: refresh-token rotation and reuse detection
//! - [`tokens`]: access and refresh tokens
//! - [`store`]: the SQL, one module per aggregate
//! - [`error`]: errors as problem documents

pub mod account;
pub mod config;
pub mod error;
pub mod http;
pub mod keys;
pub mod lockout;
pub mod mfa;
pub mod oidc;
pub mod password;
pub mod role;
pub mod rotation;
pub mod store;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::FutureExt;
use jsonwebtoken::jwk::JwkSet;
use tienda_kit::{
    Needs, Platform,
    jwt::{JwksSource, Verifier, VerifierConfig},
    outbox::RelayConfig,
};

use crate::{config::Config, keys::KeyRing};

/// The migrations of the auth database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The key ring as the token verifier's key source (no HTTP round trip to ourselves).
struct OwnKeys(Arc<KeyRing>);

impl JwksSource for OwnKeys {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<JwkSet, String>> {
        async move {
            let value = self.0.jwks().await.map_err(|e| e.to_string())?;
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        .boxed()
    }
}

/// A built auth service.
#[derive(Debug)]
pub struct Application(tienda_kit::Application);

impl Application {
    /// Connects, migrates, ensures a signing key and the first admin, binds.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let platform = Platform::start(
            "auth",
            config.common.clone(),
            Needs {
                database: Some(&MIGRATOR),
                nats: true,
            },
        )
        .await?;
        let keys = Arc::new(KeyRing::new(
            platform.db().clone(),
            config.key_encryption_key.expose(),
            Duration::from_secs(u64::from(config.key_rotation_seconds)),
            Duration::from_secs(u64::from(config.access_token_ttl_seconds)),
        )?);
        keys.active().await.context("ensuring a signing key")?;
        let verifier = Verifier::with_source(
            VerifierConfig {
                jwks_url: format!("{}/.well-known/jwks.json", config.issuer),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                min_refresh_interval: Duration::from_secs(5),
                leeway_seconds: 30,
            },
            Arc::new(OwnKeys(keys.clone())),
        );
        let outbound = tienda_kit::outbound::Outbound::start_with_client(
            &platform,
            &config.policy,
            oidc::Providers::http_client()?,
        )
        .await?;
        let oidc = oidc::Providers::new(
            oidc::parse_providers(&config.oidc_providers).map_err(anyhow::Error::msg)?,
            &config.issuer,
            outbound,
        )?;
        let sealer = tienda_kit::seal::Sealer::from_config(config.event_sealing_keys.expose())
            .context("reading EVENT_SEALING_KEYS")?;
        let dummy_hash = password::hash_off_thread("not a password anyone has".into()).await?;
        let state = http::AppState {
            db: platform.db().clone(),
            keys,
            config: Arc::new(config.clone()),
            verifier,
            dummy_hash: Arc::new(dummy_hash),
            hasher: password::Hasher::new(
                config.hashing_memory_mib,
                std::time::Duration::from_millis(config.hashing_wait_ms),
            ),
            oidc,
            sealer: Arc::new(sealer),
        };
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            ensure_admin(&state, email, password.expose())
                .await
                .context("creating the first admin")?;
        }
        platform.start_relay(RelayConfig::default())?;
        let (router, openapi) = http::router(state);
        let app = tienda_kit::Application::build(platform, router, openapi).await?;
        Ok(Self(app))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The admin listener's port (`/metrics`).
    pub fn admin_port(&self) -> u16 {
        self.0.admin_port()
    }

    /// The platform (tests).
    pub fn platform(&self) -> &Platform {
        self.0.platform()
    }

    /// Serves until SIGTERM, then drains.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.run_until_stopped().await
    }
}

/// Creates the configured first admin when no account has that email; an existing account
/// is left as it is (its password is never overwritten from configuration).
async fn ensure_admin(state: &http::AppState, email: &str, password: &str) -> anyhow::Result<()> {
    let email = email.trim().to_lowercase();
    let mut conn = state.db.acquire().await?;
    if store::accounts::user_by_email(&mut conn, &email)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let plain = password.to_owned();
    let hash = password::hash_off_thread(plain).await?;
    let user = store::accounts::User {
        id: uuid::Uuid::now_v7(),
        email,
        name: "Administrator".into(),
        password_hash: Some(hash),
        roles: vec![role::Role::Admin],
        // Configuration vouches for it: whoever deploys the shop chose the address.
        email_verified: true,
    };
    match store::accounts::create_user(&mut conn, &user).await {
        Ok(()) | Err(error::Error::EmailTaken) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}
