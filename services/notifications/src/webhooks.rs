//! Outbound webhooks for shop integrations (a CRM, an ERP, a warehouse): endpoints subscribe
//! to event types; each such event becomes one delivery per endpoint, sent as the event's
//! envelope in JSON and signed with the endpoint's secret by the Standard Webhooks scheme
//! (`webhook-id` = the delivery's id, stable across retries so receivers can deduplicate;
//! `webhook-timestamp`; `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`).
//!
//! Server-side request forgery: a webhook URL is the admin's, but a request from inside the
//! cluster can reach what the Internet cannot. The host is resolved at each send and every
//! address it resolves to must be public (not loopback, private, link-local, shared or
//! unspecified) unless private networks are allowed (`NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE`);
//! the connection then goes to the address that was checked (no second lookup for DNS
//! rebinding to answer differently), and redirects are not followed.
//!
//! These calls do not go through the kit's outbound client: each must be pinned to the
//! address just checked, which needs a client of its own, and a CircuitPolicy names one
//! upstream while every endpoint is a different one. A failing endpoint only delays its own
//! deliveries (retries with backoff, then the dead letter).
//!
//! Only the types in [`EVENT_TYPES`] are sent: never `user.password_reset_requested` or
//! `user.email_verification_requested`, which carry (sealed) account-access tokens.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    channel::SendError,
    deliveries::{self, QUEUED_CHANNEL},
};

/// The event types endpoints may subscribe to.
pub const EVENT_TYPES: [&str; 13] = [
    "user.registered",
    "order.placed",
    "order.confirmed",
    "order.cancelled",
    "order.shipped",
    "order.delivered",
    "order.refunded",
    "payment.authorized",
    "payment.captured",
    "payment.declined",
    "payment.voided",
    "payment.refunded",
    "payment.failed",
];

/// The channel's name on deliveries.
pub const CHANNEL: &str = "webhook";

/// An endpoint as admins see it (without its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    /// Its id (the deliveries' recipient).
    pub id: Uuid,
    /// Where events are POSTed.
    pub url: String,
    /// What it gets.
    pub event_types: Vec<String>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether it gets events.
    pub active: bool,
    /// Why it stopped (an admin, or the receiver answered 410 Gone).
    pub disabled_reason: Option<String>,
    /// Who registered it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A new signing secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Why `url` cannot be an endpoint, if it cannot (checked at registration; addresses are
/// checked again at every send).
pub fn check_url(url: &str) -> Option<String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("is not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "https" | "http") {
        return Some("must be http or https".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Some("must name a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("must not carry credentials; the signature authenticates us".into());
    }
    if url.len() > 2_000 {
        return Some("must be at most 2000 characters".into());
    }
    None
}

/// Whether `ip` is on the public Internet as far as forgery goes.
pub fn is_public(ip: IpAddr) -> bool {
    tienda_kit::net::is_public(ip)
}

/// Records one delivery per active endpoint subscribed to `event_type` (in the consumer's
/// transaction); how many.
pub async fn fan_out(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
    payload: &[u8],
) -> Result<u64, sqlx::Error> {
    if !EVENT_TYPES.contains(&event_type) {
        return Ok(0);
    }
    let body = String::from_utf8_lossy(payload);
    let endpoints: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints WHERE active AND $1 = ANY (event_types)",
    )
    .bind(event_type)
    .fetch_all(&mut *conn)
    .await?;
    let mut inserted = Vec::new();
    for endpoint in endpoints {
        // UUIDv7, so deliveries sort by time like the rest.
        let id = Uuid::now_v7();
        let new = sqlx::query(
            "INSERT INTO deliveries (id, event_id, event_type, kind, category, critical,
                 sensitive, channel, recipient, locale, template_version, subject, body_text,
                 body_html, status, traceparent)
             VALUES ($1, $2, $3, $3, 'integration', true, false, 'webhook', $4, 'en', 0, $3,
                     $5, '', 'queued', $6)
             ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING",
        )
        .bind(id)
        .bind(event_id)
        .bind(event_type)
        .bind(endpoint.to_string())
        .bind(body.as_ref())
        .bind(tienda_kit::trace_context::TraceContext::current().map(|c| c.to_header()))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if new {
            deliveries::log(conn, id, "queued", None).await?;
            inserted.push(id);
        }
    }
    if !inserted.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(conn)
            .await?;
    }
    Ok(inserted.len() as u64)
}

/// Sends webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    /// Where endpoints are read.
    pub db: PgPool,
    /// Whether endpoints may resolve to private addresses (a cluster-internal receiver, a
    /// local run).
    pub allow_private: bool,
    /// How long one call may take.
    pub timeout: Duration,
}

impl WebhookSender {
    /// Sends delivery `id` (`body`, the event) to endpoint `recipient`; the receiver's
    /// status line as the provider reference.
    pub async fn send(&self, id: Uuid, recipient: &str, body: &str) -> Result<String, SendError> {
        let Ok(endpoint_id) = Uuid::try_parse(recipient) else {
            return Err(SendError::Permanent(format!("no endpoint {recipient:?}")));
        };
        let endpoint: Option<(String, String, bool)> =
            sqlx::query_as("SELECT url, secret, active FROM webhook_endpoints WHERE id = $1")
                .bind(endpoint_id)
                .fetch_optional(&self.db)
                .await
                .map_err(|e| SendError::Transient(format!("reading the endpoint: {e}")))?;
        let Some((url, secret, active)) = endpoint else {
            return Err(SendError::Permanent(format!(
                "endpoint {recipient} was deleted"
            )));
        };
        if !active {
            return Err(SendError::Permanent(format!(
                "endpoint {recipient} is disabled"
            )));
        }
        let url = reqwest::Url::parse(&url)
            .map_err(|e| SendError::Permanent(format!("endpoint URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let address = self.checked_address(&host, port).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .resolve(host.trim_start_matches('[').trim_end_matches(']'), address)
            .user_agent("Tienda-Webhooks/1")
            .build()
            .map_err(|e| SendError::Transient(format!("building the client: {e}")))?;
        let timestamp = Utc::now().timestamp();
        let message_id = id.to_string();
        let signature = standardwebhooks::Webhook::new(&secret)
            .and_then(|w| w.sign(&message_id, timestamp, body.as_bytes()))
            .map_err(|e| SendError::Permanent(format!("signing: {e}")))?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("POST to the endpoint: {e}")))?;
        let status = response.status();
        let line = format!("HTTP {status}");
        if status.is_success() {
            return Ok(line);
        }
        match status.as_u16() {
            429 => {
                let wait = crate::channel::provider::retry_after(response.headers());
                Err(SendError::Throttled(
                    wait,
                    format!("{line}: the receiver asks to wait {} s", wait.as_secs()),
                ))
            }
            410 => {
                // The receiver says the endpoint is gone for good: stop sending to it.
                sqlx::query(
                    "UPDATE webhook_endpoints SET active = false, updated_at = now(),
                            disabled_reason = 'the receiver answered 410 Gone'
                     WHERE id = $1",
                )
                .bind(endpoint_id)
                .execute(&self.db)
                .await
                .map_err(|e| SendError::Transient(format!("disabling the endpoint: {e}")))?;
                Err(SendError::Permanent(format!(
                    "{line}: the endpoint is disabled"
                )))
            }
            _ => Err(SendError::Transient(line)),
        }
    }

    /// The address to connect to: the first the host resolves to, once every one is allowed.
    async fn checked_address(&self, host: &str, port: u16) -> Result<SocketAddr, SendError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| SendError::Transient(format!("resolving {host}: {e}")))?
            .collect();
        if addresses.is_empty() {
            return Err(SendError::Transient(format!("{host} resolves to nothing")));
        }
        if !self.allow_private
            && let Some(private) = addresses.iter().find(|a| !is_public(a.ip()))
        {
            return Err(SendError::Permanent(format!(
                "{host} resolves to {}, which is not a public address; webhooks to private \
                 networks need NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE=true",
                private.ip()
            )));
        }
        Ok(addresses[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_metadata_and_mapped_loopback_are_not_public() {
        for ip in ["169.254.169.254", "::ffff:127.0.0.1", "fd00:ec2::254"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn endpoint_urls_are_http_with_a_host_and_no_credentials() {
        assert_eq!(check_url("https://crm.example.com/hooks/tienda"), None);
        assert!(check_url("ftp://crm.example.com/").is_some());
        assert!(check_url("https://user:pw@crm.example.com/").is_some());
        assert!(check_url("not a url").is_some());
        assert!(check_url("file:///etc/passwd").is_some());
    }

    #[test]
    fn secrets_are_whsec_and_verify_with_the_standard_scheme() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        assert_ne!(secret, new_secret());
        let hook = standardwebhooks::Webhook::new(&secret).unwrap();
        let signature = hook.sign("msg_1", Utc::now().timestamp(), b"{}").unwrap();
        assert!(signature.starts_with("v1,"));
    }
}
