//! Access-token verification that every service (and the gateway) does alone: JWTs signed by
//! auth with EdDSA or ES256, checked against auth's JWKS (cached; refetched at a bounded rate
//! when a token names an unknown `kid`), per RFC 8725 and the RFC 9068 access-token profile.
//!
//! What is refused: any algorithm other than the key's own (so `alg: none` and HS256 signed
//! with the public key fail), a `typ` other than `at+jwt`, a missing or unknown `kid`, a bad
//! signature, an expired or not-yet-valid token, another issuer or audience.

use std::{collections::HashMap, sync::Arc, time::Duration};

// Tokio's clock, so the refetch rate can be tested on a paused clock.
use tokio::time::Instant;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::problem::Problem;

/// Where the keys are and what tokens must say.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// auth's JWKS, e.g. `http://auth/.well-known/jwks.json`.
    pub jwks_url: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must include.
    pub audience: String,
    /// Least time between two JWKS fetches (an unknown `kid` cannot make us hammer auth).
    pub min_refresh_interval: Duration,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The issuer.
    pub iss: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Roles (`customer`, `support`, `admin`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Space-separated permissions.
    #[serde(default)]
    pub scope: String,
    /// The session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused (the client sees only "invalid token"; the reason is logged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The header is not a JWT with a supported algorithm, `typ` and `kid`.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No key with that `kid`, even after refreshing the JWKS.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The JWKS could not be fetched.
    #[error("keys unavailable: {0}")]
    KeysUnavailable(String),
    /// Signature, algorithm, time or audience/issuer check failed.
    #[error("rejected: {0}")]
    Rejected(String),
}

struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Key>>,
    fetched_at: Option<Instant>,
    /// Why the last fetch failed; `None` when it succeeded.
    failed: Option<String>,
}

/// After a failed fetch, the least time before the next (auth restarting must not cost its
/// users the whole [`VerifierConfig::min_refresh_interval`] of refusals).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Where the public keys come from: auth's JWKS over HTTP, or (inside auth itself) its own
/// key store.
pub trait JwksSource: Send + Sync + 'static {
    /// The current key set.
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<JwkSet, String>>;
}

struct HttpJwks {
    url: String,
    http: reqwest::Client,
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<JwkSet, String>> {
        Box::pin(async move {
            self.http
                .get(&self.url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    config: Arc<VerifierConfig>,
    source: Arc<dyn JwksSource>,
    cache: Arc<RwLock<Cache>>,
    refreshing: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

const ALLOWED: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

impl Verifier {
    /// A verifier; keys are fetched on first use.
    pub fn new(config: VerifierConfig) -> Self {
        // reqwest's rustls needs a process-wide provider; installing it twice is harmless.
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client builds");
        let source = HttpJwks {
            url: config.jwks_url.clone(),
            http,
        };
        Self::with_source(config, Arc::new(source))
    }

    /// A verifier reading keys from `source` (auth verifies its own tokens this way).
    pub fn with_source(config: VerifierConfig, source: Arc<dyn JwksSource>) -> Self {
        Self {
            config: Arc::new(config),
            source,
            cache: Arc::default(),
            refreshing: Arc::default(),
        }
    }

    async fn refresh(&self) -> Result<(), TokenError> {
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let cache = self.cache.read().await;
            let interval = match cache.failed {
                Some(_) => self.config.min_refresh_interval.min(RETRY_AFTER_FAILURE),
                None => self.config.min_refresh_interval,
            };
            if let Some(at) = cache.fetched_at
                && at.elapsed() < interval
            {
                // Too soon to ask again. A token we cannot check because auth did not
                // answer is not a bad token: say the keys are unavailable.
                return match &cache.failed {
                    Some(why) => Err(TokenError::KeysUnavailable(why.clone())),
                    None => Ok(()),
                };
            }
        }
        let result = async {
            let set = self.source.fetch().await?;
            let mut keys = HashMap::new();
            for jwk in &set.keys {
                let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
                else {
                    continue;
                };
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                        if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    _ => continue, // only the pinned algorithms
                };
                keys.insert(kid, Arc::new(Key { key, algorithm }));
            }
            Ok::<_, String>(keys)
        }
        .await;
        let mut cache = self.cache.write().await;
        cache.fetched_at = Some(Instant::now());
        match result {
            Ok(keys) => {
                cache.keys = keys;
                cache.failed = None;
                Ok(())
            }
            Err(err) => {
                cache.failed = Some(err.clone());
                Err(TokenError::KeysUnavailable(err))
            }
        }
    }

    async fn key(&self, kid: &str) -> Result<Arc<Key>, TokenError> {
        if let Some(key) = self.cache.read().await.keys.get(kid) {
            return Ok(key.clone());
        }
        self.refresh().await?;
        self.cache
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(TokenError::Malformed(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        if header
            .typ
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
            != Some("at+jwt")
        {
            return Err(TokenError::Malformed("typ must be at+jwt".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("no kid".into()))?;
        let key = self.key(&kid).await?;
        if key.algorithm != header.alg {
            return Err(TokenError::Rejected(format!(
                "key {kid} is not an {:?} key",
                header.alg
            )));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.algorithms = vec![key.algorithm];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Rejected(e.to_string()))?;
        if claims
            .sid
            .as_deref()
            .is_some_and(crate::revocation::is_revoked)
        {
            return Err(TokenError::Rejected("its session was ended".into()));
        }
        Ok(claims)
    }

    /// Verifies the bearer token in `headers`.
    pub async fn verify_headers(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Claims, TokenError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(TokenError::Missing)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(TokenError::Missing)?;
        self.verify(token.trim()).await
    }
}

/// The answer to a request whose token `error` refused: 401 with `WWW-Authenticate: Bearer`,
/// or 503 with `Retry-After` when the keys could not be fetched (the token may be fine).
pub fn refusal(error: &TokenError) -> Response {
    tracing::info!(%error, "token refused");
    let detail = match error {
        TokenError::Missing => "Send an access token: `Authorization: Bearer <token>`.",
        TokenError::KeysUnavailable(_) => "Tokens cannot be checked right now; retry shortly.",
        _ => "The access token is invalid or expired; sign in again or refresh it.",
    };
    let status = match error {
        TokenError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let problem = Problem::new(status, "unauthorized", "Unauthorized").with_detail(detail);
    match error {
        TokenError::KeysUnavailable(_) => problem
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response(),
        _ => problem
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response(),
    }
}

/// A route layer's state: the verifier and the role a route needs.
#[derive(Clone, Debug)]
pub struct RequireRole {
    /// The verifier.
    pub verifier: Verifier,
    /// The role.
    pub role: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state(RequireRole { .. }, require_role)`):
/// 401 without a valid token, 403 without the role; the claims go into the request's
/// extensions for the handler.
pub async fn require_role(
    State(rule): State<RequireRole>,
    mut request: Request,
    next: Next,
) -> Response {
    let verified = rule.verifier.verify_headers(request.headers()).await;
    match verified {
        Ok(claims) if claims.has_role(rule.role) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Ok(claims) => {
            tracing::info!(sub = %claims.sub, role = rule.role, "forbidden");
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail(format!("This needs the {} role.", rule.role))
                .into_response()
        }
        Err(error) => refusal(&error),
    }
}

/// Middleware (`from_fn_with_state(verifier, authenticate)`): 401 without a valid token; the
/// claims go into the request's extensions (`Extension<Claims>` in handlers).
pub async fn authenticate(
    State(verifier): State<Verifier>,
    mut request: Request,
    next: Next,
) -> Response {
    let verified = verifier.verify_headers(request.headers()).await;
    match verified {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(error) => refusal(&error),
    }
}

/// Middleware (`from_fn_with_state(verifier, authenticate_optional)`) for routes open to
/// guests: without an `Authorization` header the request goes on with no claims; with one,
/// the token must be valid (401 otherwise — a bad token never turns a customer into a
/// guest). Handlers take `Option<Extension<Claims>>`.
pub async fn authenticate_optional(
    State(verifier): State<Verifier>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    match verifier.verify_headers(request.headers()).await {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(error) => refusal(&error),
    }
}
