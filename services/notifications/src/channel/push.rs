//! Push: a notification (a title and one line) on the devices someone registered. A device is
//! an FCM registration token (an app) or a Web Push subscription (a browser); each provider
//! sends to its own devices:
//! - [`Fcm`]: FCM HTTP v1, `POST /v1/projects/{project}/messages:send` with an OAuth 2 access
//!   token obtained from the service account's key (a JWT signed RS256 exchanged at the
//!   account's `token_uri`, kept until it nearly expires). `UNREGISTERED` forgets the device.
//! - [`WebPush`]: RFC 8030 to the subscription's endpoint, the payload encrypted to the
//!   browser's keys (RFC 8291, `aes128gcm`) and the request signed with the shop's VAPID key
//!   (RFC 8292, an ES256 JWT). `404`/`410` forget the subscription. Endpoints are URLs a
//!   client gives, so only the push services' hosts are called (`WEBPUSH_ALLOWED_HOSTS`),
//!   checked when a subscription is registered and again when sending.
//!
//! Failover: a message goes to the person's devices on the first provider (in
//! `NOTIFICATIONS_PUSH_PROVIDERS` order) that can be tried and on which they have a device —
//! with FCM's circuit open, their browsers get it. One notification per message and person,
//! not one per provider.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tienda_kit::outbound::{Outbound, Target};
use uuid::Uuid;

use super::{
    SendError,
    provider::{Failover, Failure, Provider, Sending, Sent, excerpt, form, retry_after},
};

/// A registered device.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Device {
    /// Its id.
    pub id: Uuid,
    /// `fcm` or `webpush`.
    pub provider: String,
    /// The FCM token or the Web Push endpoint.
    pub token: String,
    /// Web Push: the browser's public key (base64url, uncompressed P-256 point).
    #[serde(skip)]
    pub p256dh: Option<String>,
    /// Web Push: the browser's auth secret (base64url, 16 bytes).
    #[serde(skip)]
    pub auth: Option<String>,
}

/// A notification to send.
#[derive(Debug, Serialize)]
pub struct PushMessage {
    /// The delivery's id.
    pub id: Uuid,
    /// The title.
    pub title: String,
    /// One line.
    pub body: String,
    /// The person's devices, on every provider.
    pub devices: Vec<Device>,
    /// Devices a provider said are gone for good, whatever became of the message: forgotten
    /// after the attempt.
    #[serde(skip)]
    pub gone: std::sync::Mutex<Vec<Uuid>>,
}

impl PushMessage {
    fn devices_of(&self, provider: &str) -> Vec<&Device> {
        self.devices
            .iter()
            .filter(|d| d.provider == provider)
            .collect()
    }
}

/// The outcome of sending to several devices of one provider.
#[derive(Default)]
struct Outcomes {
    references: Vec<String>,
    gone: Vec<Uuid>,
    error: Option<Failure>,
}

impl Outcomes {
    /// Delivered to at least one device: `Ok`. Otherwise the first error, or — every device
    /// on this provider gone — nowhere to send it here, so the next provider is tried. The
    /// gone devices are handed to `message` either way.
    fn finish(self, provider: &str, message: &PushMessage) -> Result<Sent, Failure> {
        if !self.gone.is_empty() {
            message
                .gone
                .lock()
                .expect("never poisoned: no panics while held")
                .extend(&self.gone);
        }
        match (self.references.is_empty(), self.error) {
            (false, _) => Ok(Sent {
                reference: self.references.join(","),
            }),
            (true, Some(error)) => Err(error),
            (true, None) => Err(Failure::NoAddress(format!(
                "every {provider} device is unregistered"
            ))),
        }
    }

    fn failed(&mut self, failure: Failure) {
        if self.error.is_none() {
            self.error = Some(failure);
        }
    }
}

fn no_devices(provider: &str) -> Failure {
    Failure::NoAddress(format!("no {provider} device"))
}

/// A Google service account's key file, as the Firebase console downloads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    /// The Firebase project.
    pub project_id: String,
    /// The RSA key (PEM, PKCS#8).
    pub private_key: String,
    /// Its id (the JWT's `kid`).
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// The account (the JWT's issuer).
    pub client_email: String,
    /// Where access tokens come from.
    pub token_uri: String,
}

/// Firebase Cloud Messaging, HTTP v1.
pub struct Fcm {
    base_url: String,
    account: ServiceAccount,
    key: jsonwebtoken::EncodingKey,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("base_url", &self.base_url)
            .field("project_id", &self.account.project_id)
            .finish_non_exhaustive()
    }
}

/// The scope FCM's access tokens need.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

impl Fcm {
    /// From a service account's key file; `base_url` is `https://fcm.googleapis.com` (or a
    /// test server).
    pub fn new(base_url: String, account: ServiceAccount) -> anyhow::Result<Self> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(
            |e| anyhow::anyhow!("the service account's private_key is not an RSA key in PEM: {e}"),
        )?;
        Ok(Self {
            base_url,
            account,
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// Reads a service account's key file.
    pub fn from_file(base_url: String, path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("FCM_CREDENTIALS_FILE {}: {e}", path.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "FCM_CREDENTIALS_FILE {} is not a service account key (project_id, private_key, client_email, token_uri): {e}",
                path.display()
            )
        })?;
        Self::new(base_url, account)
    }

    /// An access token, from the cache while it has a minute left.
    async fn access_token(&self, outbound: &Outbound) -> Result<String, Failure> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && *until > Instant::now() + Duration::from_secs(60)
        {
            return Ok(token.clone());
        }
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let claims = json!({
            "iss": self.account.client_email, "scope": FCM_SCOPE,
            "aud": self.account.token_uri, "iat": now, "exp": now + 3_600,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| SendError::Permanent(format!("signing the token request: {e}")))?;
        let request = outbound
            .client()
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ]))
            .build()
            .map_err(|e| SendError::Permanent(format!("token_uri: {e}")))?;
        let response = outbound.call(Target::External("fcm"), request).await?;
        let status = response.status();
        if !status.is_success() {
            let text = excerpt(response).await;
            return Err(Failure::Send(SendError::Transient(format!(
                "the token endpoint answered HTTP {status}: {text} (check FCM_CREDENTIALS_FILE)"
            ))));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| SendError::Transient(format!("reading the access token: {e}")))?;
        let Some(token) = body["access_token"].as_str() else {
            return Err(Failure::Send(SendError::Transient(format!(
                "no access_token in the token endpoint's answer: {body}"
            ))));
        };
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(3_600));
        *cached = Some((token.to_owned(), Instant::now() + lifetime));
        Ok(token.to_owned())
    }
}

impl Provider<PushMessage> for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn send<'a>(&'a self, outbound: &'a Outbound, message: &'a PushMessage) -> Sending<'a> {
        Box::pin(async move {
            let devices = message.devices_of("fcm");
            if devices.is_empty() {
                return Err(no_devices("fcm"));
            }
            let token = self.access_token(outbound).await?;
            let url = format!(
                "{}/v1/projects/{}/messages:send",
                self.base_url.trim_end_matches('/'),
                self.account.project_id
            );
            let mut outcomes = Outcomes::default();
            for device in devices {
                let body = json!({"message": {
                    "token": device.token,
                    "notification": {"title": message.title, "body": message.body},
                    "data": {"notification_id": message.id.to_string()},
                }});
                let request = outbound
                    .client()
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&body)
                    .build()
                    .map_err(|e| SendError::Permanent(format!("building the request: {e}")))?;
                let response = match outbound.call(Target::External("fcm"), request).await {
                    Ok(response) => response,
                    Err(e) => {
                        outcomes.failed(e.into());
                        continue;
                    }
                };
                let status = response.status();
                if status.is_success() {
                    let answer: Value = response.json().await.unwrap_or_default();
                    outcomes
                        .references
                        .push(answer["name"].as_str().unwrap_or("sent").to_owned());
                    continue;
                }
                let wait = retry_after(response.headers());
                let text = excerpt(response).await;
                match status.as_u16() {
                    // The token is no longer valid: the app was uninstalled or the token
                    // rotated.
                    404 => outcomes.gone.push(device.id),
                    400 if text.contains("UNREGISTERED") || text.contains("registration token") => {
                        outcomes.gone.push(device.id);
                    }
                    401 => {
                        *self.token.lock().await = None;
                        outcomes.failed(Failure::Send(SendError::Transient(format!(
                            "HTTP 401, the access token was refused: {text}"
                        ))));
                    }
                    429 => outcomes.failed(Failure::Send(SendError::Throttled(
                        wait,
                        format!("HTTP 429: {text}"),
                    ))),
                    400..=499 => outcomes.failed(Failure::Send(SendError::Permanent(format!(
                        "HTTP {status}: {text}"
                    )))),
                    _ => outcomes.failed(Failure::Send(SendError::Transient(format!(
                        "HTTP {status}: {text}"
                    )))),
                }
            }
            outcomes.finish(self.name(), message)
        })
    }
}

/// The hosts of the browsers' push services, the default of `WEBPUSH_ALLOWED_HOSTS`.
pub const PUSH_SERVICES: &str = "fcm.googleapis.com,updates.push.services.mozilla.com,\
                                 *.push.apple.com,*.notify.windows.com";

/// Whether `host` is one of `allowed` (`*.example.com` matches any subdomain).
pub fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|a| match a.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => *a == host,
    })
}

/// Web Push with VAPID.
pub struct WebPush {
    key: jsonwebtoken::EncodingKey,
    public_key: String,
    subject: String,
    allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for WebPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPush")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl WebPush {
    /// From the VAPID private key (base64url of the 32-byte P-256 scalar, as `web-push
    /// generate-vapid-keys` prints it), the contact (`mailto:` or `https:`) and the allowed
    /// push service hosts.
    pub fn new(
        private_key: &str,
        subject: &str,
        allowed_hosts: Vec<String>,
    ) -> anyhow::Result<Self> {
        use p256::pkcs8::EncodePrivateKey;
        let bytes = URL_SAFE_NO_PAD
            .decode(private_key.trim().trim_end_matches('='))
            .map_err(|e| anyhow::anyhow!("WEBPUSH_VAPID_PRIVATE_KEY is not base64url: {e}"))?;
        let secret = p256::SecretKey::from_slice(&bytes).map_err(|_| {
            anyhow::anyhow!(
                "WEBPUSH_VAPID_PRIVATE_KEY is not a P-256 private key (32 bytes, base64url)"
            )
        })?;
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding the VAPID key: {e}"))?;
        let key = jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes());
        let public_key = URL_SAFE_NO_PAD.encode(
            p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &secret.public_key(),
                false,
            )
            .as_bytes(),
        );
        if !(subject.starts_with("mailto:") || subject.starts_with("https://")) {
            anyhow::bail!(
                "WEBPUSH_VAPID_SUBJECT must be a mailto: or https: URL push services can reach the shop at, not {subject:?}"
            );
        }
        Ok(Self {
            key,
            public_key,
            subject: subject.to_owned(),
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        })
    }

    /// The public key browsers subscribe with (`applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Why `endpoint` with `p256dh` and `auth` cannot be a subscription, by field.
    pub fn check_subscription(
        &self,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        match reqwest::Url::parse(endpoint) {
            // Plain http only to a push service on this machine (a local one, a test's).
            Ok(url) if url.scheme() == "https" || is_loopback(&url) => {
                let host = url.host_str().unwrap_or_default();
                if !host_allowed(&self.allowed_hosts, host) {
                    errors.push((
                        "subscription.endpoint".into(),
                        format!("{host} is not a push service this shop sends to (WEBPUSH_ALLOWED_HOSTS)"),
                    ));
                }
            }
            _ => errors.push((
                "subscription.endpoint".into(),
                "must be an https URL of a push service".into(),
            )),
        }
        if ua_public(p256dh).is_none() {
            errors.push((
                "subscription.keys.p256dh".into(),
                "must be a P-256 public key (65 bytes, base64url)".into(),
            ));
        }
        if ua_auth(auth).is_none() {
            errors.push((
                "subscription.keys.auth".into(),
                "must be 16 bytes, base64url".into(),
            ));
        }
        errors
    }

    fn vapid(&self, endpoint: &reqwest::Url) -> Result<String, SendError> {
        let audience = endpoint.origin().ascii_serialization();
        let claims = json!({
            "aud": audience,
            "exp": chrono::Utc::now().timestamp() + 12 * 3_600,
            "sub": self.subject,
        });
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &self.key,
        )
        .map_err(|e| SendError::Permanent(format!("signing the VAPID token: {e}")))?;
        Ok(format!("vapid t={jwt}, k={}", self.public_key))
    }

    /// The encrypted, signed request for one subscription.
    fn request(&self, device: &Device, payload: &[u8]) -> Result<reqwest::Request, String> {
        let url = reqwest::Url::parse(&device.token).map_err(|e| format!("endpoint: {e}"))?;
        if !host_allowed(&self.allowed_hosts, url.host_str().unwrap_or_default()) {
            return Err(format!(
                "{} is not an allowed push service",
                url.host_str().unwrap_or_default()
            ));
        }
        let public = device
            .p256dh
            .as_deref()
            .and_then(ua_public)
            .ok_or("bad p256dh key")?;
        let auth = device
            .auth
            .as_deref()
            .and_then(ua_auth)
            .ok_or("bad auth secret")?;
        let uri: http::Uri = device.token.parse().map_err(|e| format!("endpoint: {e}"))?;
        let built = web_push_native::WebPushBuilder::new(uri, public, auth)
            .with_valid_duration(Duration::from_secs(24 * 3_600))
            .build(payload.to_vec())
            .map_err(|e| format!("encrypting: {e}"))?;
        let authorization = self.vapid(&url).map_err(|e| e.to_string())?;
        let (mut parts, body) = built.into_parts();
        parts.headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&authorization).map_err(|e| e.to_string())?,
        );
        reqwest::Request::try_from(http::Request::from_parts(parts, body))
            .map_err(|e| e.to_string())
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    url.scheme() == "http"
        && url
            .host_str()
            .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| ip.is_loopback())
}

fn ua_public(p256dh: &str) -> Option<p256::PublicKey> {
    let bytes = URL_SAFE_NO_PAD.decode(p256dh.trim_end_matches('=')).ok()?;
    (bytes.len() == 65).then_some(())?;
    p256::PublicKey::from_sec1_bytes(&bytes).ok()
}

fn ua_auth(auth: &str) -> Option<web_push_native::Auth> {
    let bytes = URL_SAFE_NO_PAD.decode(auth.trim_end_matches('=')).ok()?;
    (bytes.len() == 16).then(|| web_push_native::Auth::clone_from_slice(&bytes))
}

impl Provider<PushMessage> for WebPush {
    fn name(&self) -> &'static str {
        "webpush"
    }

    fn send<'a>(&'a self, outbound: &'a Outbound, message: &'a PushMessage) -> Sending<'a> {
        Box::pin(async move {
            let devices = message.devices_of("webpush");
            if devices.is_empty() {
                return Err(no_devices("webpush"));
            }
            let payload = serde_json::to_vec(&json!({
                "id": message.id, "title": message.title, "body": message.body,
            }))
            .unwrap_or_default();
            let mut outcomes = Outcomes::default();
            for device in devices {
                let request = match self.request(device, &payload) {
                    Ok(request) => request,
                    Err(e) => {
                        // A subscription that cannot be used never will be.
                        tracing::warn!(device = %device.id, error = %e, "forgetting a bad subscription");
                        outcomes.gone.push(device.id);
                        continue;
                    }
                };
                let response = match outbound.call(Target::External("webpush"), request).await {
                    Ok(response) => response,
                    Err(e) => {
                        outcomes.failed(e.into());
                        continue;
                    }
                };
                let status = response.status();
                if status.is_success() {
                    let location = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("accepted")
                        .to_owned();
                    outcomes.references.push(location);
                    continue;
                }
                let wait = retry_after(response.headers());
                let text = excerpt(response).await;
                match status.as_u16() {
                    404 | 410 => outcomes.gone.push(device.id),
                    429 => outcomes.failed(Failure::Send(SendError::Throttled(
                        wait,
                        format!("HTTP 429: {text}"),
                    ))),
                    413 => outcomes.failed(Failure::Send(SendError::Permanent(format!(
                        "HTTP 413, the payload is too large: {text}"
                    )))),
                    401 | 403 => outcomes.failed(Failure::Send(SendError::Transient(format!(
                        "HTTP {status}, the push service refused our VAPID signature (check \
                         WEBPUSH_VAPID_PRIVATE_KEY and WEBPUSH_VAPID_SUBJECT): {text}"
                    )))),
                    _ => outcomes.failed(Failure::Send(SendError::Transient(format!(
                        "HTTP {status}: {text}"
                    )))),
                }
            }
            outcomes.finish(self.name(), message)
        })
    }
}

/// Sends push deliveries: loads the person's devices, sends by the first provider that can,
/// forgets the devices providers say are gone. Without providers, writes `.push.json` files.
#[derive(Debug)]
pub struct PushSender {
    /// The database (devices).
    pub db: PgPool,
    /// The providers; none: files in `outbox`.
    pub providers: Failover<PushMessage>,
    /// Where notifications go without providers.
    pub outbox: PathBuf,
}

impl PushSender {
    /// Sends delivery `id` to `recipient` (`user:<uuid>`).
    pub async fn send(
        &self,
        id: Uuid,
        recipient: &str,
        title: &str,
        body: &str,
    ) -> Result<String, SendError> {
        let Some(user_id) = recipient
            .strip_prefix("user:")
            .and_then(|u| Uuid::try_parse(u).ok())
        else {
            return Err(SendError::Permanent(format!("{recipient:?} is not a user")));
        };
        let devices: Vec<Device> = sqlx::query_as(
            "SELECT id, provider, token, p256dh, auth FROM push_devices
             WHERE user_id = $1 ORDER BY created_at DESC",
        )
        .bind(user_id)
        .fetch_all(&self.db)
        .await
        .map_err(|e| SendError::Transient(format!("reading the devices: {e}")))?;
        if devices.is_empty() {
            return Err(SendError::Permanent("no push device is registered".into()));
        }
        let message = PushMessage {
            id,
            title: title.to_owned(),
            body: body.to_owned(),
            devices,
            gone: std::sync::Mutex::default(),
        };
        if self.providers.is_empty() {
            let bytes = serde_json::to_vec_pretty(&message).unwrap_or_default();
            return super::eml::write_file(&self.outbox, &format!("{id}.push.json"), &bytes).await;
        }
        let sent = self.providers.send(&message).await;
        let gone = std::mem::take(
            &mut *message
                .gone
                .lock()
                .expect("never poisoned: no panics while held"),
        );
        if !gone.is_empty() {
            tracing::info!(delivery = %id, devices = gone.len(), "forgetting devices the provider says are gone");
            sqlx::query("DELETE FROM push_devices WHERE id = ANY($1)")
                .bind(&gone)
                .execute(&self.db)
                .await
                .map_err(|e| SendError::Transient(format!("forgetting gone devices: {e}")))?;
        }
        Ok(sent?.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_exactly_or_by_subdomain_wildcard() {
        let allowed: Vec<String> = PUSH_SERVICES.split(',').map(str::to_owned).collect();
        assert!(host_allowed(&allowed, "fcm.googleapis.com"));
        assert!(host_allowed(&allowed, "web.push.apple.com"));
        assert!(host_allowed(&allowed, "DB5P.NOTIFY.WINDOWS.COM"));
        assert!(!host_allowed(&allowed, "push.apple.com.evil.example"));
        assert!(!host_allowed(&allowed, "169.254.169.254"));
        assert!(!host_allowed(&allowed, "evilfcm.googleapis.com"));
    }

    #[test]
    fn subscriptions_need_an_allowed_https_endpoint_and_real_keys() {
        let key = URL_SAFE_NO_PAD.encode(
            p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng).to_bytes(),
        );
        let push = WebPush::new(
            &key,
            "mailto:ops@shop.example",
            vec!["fcm.googleapis.com".into()],
        )
        .unwrap();
        let browser = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let p256dh = URL_SAFE_NO_PAD.encode(
            p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &browser.public_key(),
                false,
            )
            .as_bytes(),
        );
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert!(
            push.check_subscription("https://fcm.googleapis.com/fcm/send/abc", &p256dh, &auth)
                .is_empty()
        );
        let fields: Vec<String> = push
            .check_subscription("https://169.254.169.254/latest", "AAAA", "short")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "subscription.endpoint",
                "subscription.keys.p256dh",
                "subscription.keys.auth"
            ]
        );
        assert_eq!(push.public_key().len(), 87, "65 bytes in base64url");
    }
}
