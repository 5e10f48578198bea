//! OpenID Connect providers: configuration, discovery (cached, refreshed when the provider's keys
//! change) and the HTTP client the `openidconnect` crate talks through.
//!
//! The protocol itself — authorization URL, PKCE, token exchange, ID-token signature, `iss`,
//! `aud`, `exp`, `nonce` and `at_hash` checks — is the `openidconnect` crate's; this module only
//! decides which provider, with which client, over which connection.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IssuerUrl, RedirectUrl,
    core::{CoreClient, CoreProviderMetadata},
};
use serde::Deserialize;
use tienda_kit::outbound::{CallError, Outbound, Target};
use tokio::sync::Mutex;

/// One provider as configured in `AUTH_OIDC_PROVIDERS`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The `{provider}` in `/v1/auth/oidc/{provider}/start`: lower-case letters, digits, `-`.
    pub name: String,
    /// The issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client registered at the provider.
    pub client_id: String,
    /// The client secret, for confidential clients; PKCE is used either way.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Where the provider sends the browser back; registered at the provider. Default:
    /// `<AUTH_ISSUER>/v1/auth/oidc/<name>/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Scopes besides `openid` (default `email profile`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

/// Parses `AUTH_OIDC_PROVIDERS`: a JSON array of [`ProviderConfig`].
pub fn parse_providers(json: &str) -> Result<Vec<ProviderConfig>, String> {
    let providers: Vec<ProviderConfig> = serde_json::from_str(json).map_err(|e| {
        format!(
            "AUTH_OIDC_PROVIDERS is not a JSON array of \
             {{name, issuer, client_id, client_secret?, redirect_uri?, scopes?}}: {e}"
        )
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &providers {
        let valid_name = !p.name.is_empty()
            && p.name.len() <= 40
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(format!(
                "AUTH_OIDC_PROVIDERS: provider name {:?} must be 1-40 of a-z, 0-9 and -",
                p.name
            ));
        }
        if !seen.insert(p.name.clone()) {
            return Err(format!(
                "AUTH_OIDC_PROVIDERS: provider {:?} is listed twice",
                p.name
            ));
        }
        IssuerUrl::new(p.issuer.clone())
            .map_err(|e| format!("AUTH_OIDC_PROVIDERS: {}: issuer: {e}", p.name))?;
        if let Some(uri) = &p.redirect_uri {
            RedirectUrl::new(uri.clone())
                .map_err(|e| format!("AUTH_OIDC_PROVIDERS: {}: redirect_uri: {e}", p.name))?;
        }
    }
    Ok(providers)
}

/// A client for one discovered provider: authorization and token endpoints known.
pub type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long discovery metadata (endpoints and keys) is trusted before it is read again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The shortest gap between two discoveries forced by a failed ID-token check, so a flood of
/// forged tokens cannot make us hammer the provider.
const MIN_FORCED_REFRESH: Duration = Duration::from_secs(30);

struct Discovered {
    at: Instant,
    client: Arc<Client>,
}

struct Provider {
    config: ProviderConfig,
    redirect_uri: RedirectUrl,
    discovered: Mutex<Option<Discovered>>,
}

/// The configured providers.
#[derive(Clone)]
pub struct Providers {
    /// Every call to a provider goes through it, so the CircuitPolicy `{kind: External, name:
    /// <provider>}` applies (deadline, breaker, retries of discovery and JWKS reads).
    outbound: Outbound,
    by_name: Arc<BTreeMap<String, Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// A provider could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("OIDC provider {provider}: {message}")]
pub struct ProviderError {
    /// Which.
    pub provider: String,
    /// What went wrong.
    pub message: String,
}

impl Providers {
    /// The HTTP client for providers: following redirects from a provider's endpoints would
    /// open us to SSRF.
    pub fn http_client() -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// Providers from configuration, called through `outbound` (built over
    /// [`Providers::http_client`]); nothing is fetched until the first login.
    pub fn new(
        configs: Vec<ProviderConfig>,
        auth_issuer: &str,
        outbound: Outbound,
    ) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for config in configs {
            let redirect_uri = config.redirect_uri.clone().unwrap_or_else(|| {
                format!(
                    "{}/v1/auth/oidc/{}/callback",
                    auth_issuer.trim_end_matches('/'),
                    config.name
                )
            });
            let redirect_uri = RedirectUrl::new(redirect_uri)?;
            by_name.insert(
                config.name.clone(),
                Provider {
                    config,
                    redirect_uri,
                    discovered: Mutex::new(None),
                },
            );
        }
        Ok(Self {
            outbound,
            by_name: Arc::new(by_name),
        })
    }

    /// Whether `name` is configured.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Scopes to ask `name` for, `openid` aside.
    pub fn scopes(&self, name: &str) -> &[String] {
        self.by_name
            .get(name)
            .map_or(&[], |p| p.config.scopes.as_slice())
    }

    /// The configured issuer of `name`: what identities are keyed by.
    pub fn issuer(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(|p| p.config.issuer.as_str())
    }

    /// The HTTP client for the `openidconnect` calls to provider `name`.
    pub fn http(
        &self,
        name: &str,
    ) -> impl Fn(HttpRequest) -> BoxFuture<'static, Result<HttpResponse, SendError>> + '_ {
        let outbound = self.outbound.clone();
        let name = name.to_owned();
        move |request: HttpRequest| {
            let outbound = outbound.clone();
            let name = name.clone();
            Box::pin(async move { send(&outbound, &name, request).await })
        }
    }

    /// The client of `name`, discovering the provider when that has not happened within the
    /// metadata lifetime, or when `refresh` asks for it (an ID token signed with a key we do not
    /// know yet: the provider rotated its keys).
    pub async fn client(&self, name: &str, refresh: bool) -> Result<Arc<Client>, ProviderError> {
        let provider = self.by_name.get(name).ok_or_else(|| ProviderError {
            provider: name.into(),
            message: "not configured".into(),
        })?;
        let mut slot = provider.discovered.lock().await;
        if let Some(found) = slot.as_ref() {
            let age = found.at.elapsed();
            let fresh = age < METADATA_TTL && (!refresh || age < MIN_FORCED_REFRESH);
            if fresh {
                return Ok(found.client.clone());
            }
        }
        let issuer = IssuerUrl::new(provider.config.issuer.clone()).map_err(|e| ProviderError {
            provider: name.into(),
            message: format!("issuer: {e}"),
        })?;
        let http = self.http(name);
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| ProviderError {
                provider: name.into(),
                message: format!("discovery failed: {}", error_chain(&e)),
            })?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.config.client_id.clone()),
            provider.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(provider.redirect_uri.clone());
        let client = Arc::new(client);
        *slot = Some(Discovered {
            at: Instant::now(),
            client: client.clone(),
        });
        tracing::info!(provider = name, "OIDC provider discovered");
        Ok(client)
    }
}

/// Why a call to a provider produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused or failed by the outbound client (circuit open, deadline, connection).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The request could not be built, or the answer's body not read.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

async fn send(
    outbound: &Outbound,
    provider: &str,
    request: HttpRequest,
) -> Result<HttpResponse, SendError> {
    let request = reqwest::Request::try_from(request)?;
    let response = outbound.call(Target::External(provider), request).await?;
    let mut builder = axum::http::Response::builder().status(response.status());
    if let Some(headers) = builder.headers_mut() {
        headers.extend(response.headers().clone());
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder
        .body(body)
        .expect("status and headers came from a valid response"))
}

/// `error: cause: cause` — the `openidconnect` errors keep the useful part in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
