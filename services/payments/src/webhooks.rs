//! Provider webhooks: `POST /v1/webhooks/{provider}` verifies the signature on the raw body,
//! stores the event once by the provider's event id and answers at once; a worker then
//! reconciles each stored event with the provider.
//!
//! - **Signature** (Stripe's scheme): `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=…]`,
//!   each `v1` an HMAC-SHA256 of `<t>.<raw body>`. Any configured secret may match, so a
//!   secret can be rotated by adding the new one before the old is removed. A timestamp
//!   further than the tolerance from now (either way) is refused: a captured request cannot
//!   be replayed later.
//! - **Once**: the event id is the primary key; a duplicate is answered 200 and changes
//!   nothing.
//! - **Fast and durable**: the 200 is sent once the row is committed; processing happens
//!   after, so a crash between the two loses nothing (the worker finds the row at start).
//! - **Out of order**: an event's payload is never trusted for state. The worker fetches the
//!   intent's current state from the provider and moves our payment only where that state
//!   says: a stale `payment_failed` arriving after the authorization changes nothing.
//!
//! What reconciliation does with a payment ([`reconcile`]):
//! - an open challenge is concluded from the provider's state (authorized or declined, the
//!   saga continued with the event), as when the customer answers it;
//! - an intent still held at the provider for a payment we declined, voided or failed (a
//!   challenge that lapsed here and was completed there afterwards) is cancelled, so no money
//!   stays held for an order that will not ship;
//! - anything else is left alone and the event marked processed.
//!
//! An event whose reconciliation cannot reach the provider is retried with backoff (up to 5
//! minutes apart); it never blocks the others.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ring::hmac;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    challenge,
    db::{
        attempts::{self, NewAttempt, Operation, Outcome},
        payments,
    },
    domain::payment::PaymentStatus,
    error::Error,
    provider::{FollowUpRequest, IntentState, ProviderError, Providers},
};

/// How far a signature's timestamp may be from now by default (Stripe's libraries: 5 min).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The secrets webhooks of one provider are signed with.
#[derive(Clone)]
pub struct WebhookSecrets {
    keys: Vec<hmac::Key>,
    tolerance: Duration,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("secrets", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header, or one without `t=` and `v1=`.
    #[error(
        "the Stripe-Signature header is missing or malformed (expected t=<unix seconds>,v1=<hex>)"
    )]
    Malformed,
    /// The timestamp is too far from now.
    #[error("the signature's timestamp is {0} s away from now, more than the tolerance allows")]
    Stale(i64),
    /// No `v1` matches any configured secret.
    #[error("no signature matches a configured webhook secret")]
    Mismatch,
}

impl WebhookSecrets {
    /// Secrets (any may sign) and the timestamp tolerance.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S], tolerance: Duration) -> Self {
        Self {
            keys: secrets
                .iter()
                .filter(|s| !s.as_ref().is_empty())
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
                .collect(),
            tolerance,
        }
    }

    /// Whether any secret is configured (without one, every webhook is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `header` (the `Stripe-Signature` value) against `body` at `now`.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Malformed)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(',') {
            match item.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                Some(("v1", sig)) => {
                    if let Ok(bytes) = hex::decode(sig) {
                        signatures.push(bytes);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        let skew = now.timestamp().saturating_sub(timestamp);
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        if skew.unsigned_abs() > tolerance.unsigned_abs() {
            return Err(SignatureError::Stale(skew));
        }
        let mut signed = Vec::with_capacity(body.len() + 12);
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        // `hmac::verify` compares in constant time.
        let matched = self.keys.iter().any(|key| {
            signatures
                .iter()
                .any(|sig| hmac::verify(key, &signed, sig).is_ok())
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    /// The header a sender with `secret` would put on `body` at `timestamp` (tests, and the
    /// documentation of the scheme).
    pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut signed = timestamp.to_string().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(body);
        format!(
            "t={timestamp},v1={}",
            hex::encode(hmac::sign(&key, &signed).as_ref())
        )
    }
}

/// The parts of a Stripe event we keep apart from its payload.
#[derive(Debug, Deserialize)]
pub struct EventHead {
    /// `evt_…`, unique per event (the dedup key).
    pub id: String,
    /// `payment_intent.succeeded`, `charge.refunded`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The object it is about.
    pub data: EventData,
}

/// An event's `data`.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object (only its id, kind and intent are read).
    pub object: EventObject,
}

/// The object of an event.
#[derive(Debug, Deserialize)]
pub struct EventObject {
    /// Its id.
    pub id: Option<String>,
    /// `payment_intent`, `charge`, `refund`, …
    pub object: Option<String>,
    /// The intent a charge or refund belongs to.
    pub payment_intent: Option<String>,
}

impl EventHead {
    /// The PaymentIntent the event concerns, if any.
    pub fn intent(&self) -> Option<&str> {
        let object = &self.data.object;
        match object.object.as_deref() {
            Some("payment_intent") => object.id.as_deref(),
            _ => object.payment_intent.as_deref(),
        }
    }
}

/// Stores a verified event once; returns whether it was new.
pub async fn store(
    db: &PgPool,
    provider: &str,
    head: &EventHead,
    payload: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_events (provider, event_id, type, intent, payload) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(provider)
    .bind(&head.id)
    .bind(&head.kind)
    .bind(head.intent())
    .bind(payload)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// What reconciling one payment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// Our state already agreed with the provider's.
    Unchanged,
    /// An open challenge was concluded.
    ChallengeConcluded,
    /// An intent still held for a payment that is over was cancelled.
    OrphanVoided,
}

impl Reconciled {
    fn as_str(self) -> &'static str {
        match self {
            Reconciled::Unchanged => "unchanged",
            Reconciled::ChallengeConcluded => "challenge_concluded",
            Reconciled::OrphanVoided => "orphan_voided",
        }
    }
}

/// How long the provider has to answer a reconciliation.
const PROVIDER_WAIT: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Brings payment `id` in line with the provider's current state of its intent, in the
/// caller's transaction (the payment is locked).
pub async fn reconcile(
    conn: &mut PgConnection,
    providers: &Providers,
    id: Uuid,
) -> Result<Reconciled, ReconcileError> {
    payments::lock(conn, id).await?;
    let Some(payment) = payments::get(conn, id).await? else {
        return Ok(Reconciled::Unchanged);
    };
    let (Some(provider), Some(reference)) = (
        providers.get(&payment.provider),
        payment.provider_reference.clone(),
    ) else {
        return Ok(Reconciled::Unchanged);
    };
    let intent = provider
        .retrieve(&reference, Utc::now() + PROVIDER_WAIT)
        .await?;
    match payment.status {
        PaymentStatus::RequiresAction => {
            let concluded = challenge::conclude_from(conn, &payment, &intent.state)
                .await
                .map_err(ReconcileError::Payment)?;
            Ok(if concluded.is_some() {
                Reconciled::ChallengeConcluded
            } else {
                Reconciled::Unchanged
            })
        }
        PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Voided
            if intent.state == IntentState::Authorized =>
        {
            let key = format!("void-orphan-{id}");
            let cancel = FollowUpRequest {
                reference: reference.clone(),
                capture_reference: None,
                payment_method: payment.payment_method.clone(),
                amount: None,
                reason: None,
                idempotency_key: key.clone(),
                deadline: Utc::now() + PROVIDER_WAIT,
            };
            provider.void(&cancel).await?;
            tracing::warn!(payment_id = %id, status = %payment.status, %reference,
                "cancelled an authorization still held at the provider for a payment that is over");
            attempts::record(
                conn,
                &NewAttempt {
                    payment_id: id,
                    operation: Operation::Void,
                    amount: None,
                    idempotency_key: &key,
                    outcome: Outcome::Succeeded,
                    code: None,
                    detail: Some("held at the provider after the payment ended here"),
                    provider_reference: Some(&reference),
                    command_id: None,
                },
            )
            .await?;
            Ok(Reconciled::OrphanVoided)
        }
        _ => Ok(Reconciled::Unchanged),
    }
}

/// Why a reconciliation did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The provider could not be asked (retry later) or refused.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Our side failed.
    #[error(transparent)]
    Payment(Error),
}

impl From<sqlx::Error> for ReconcileError {
    fn from(e: sqlx::Error) -> Self {
        ReconcileError::Payment(Error::Database(e))
    }
}

/// Processes the oldest due event, in one transaction; returns whether there was one.
pub async fn process_one(db: &PgPool, providers: &Providers) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row: Option<(String, String, Option<String>, i32)> = sqlx::query_as(
        "SELECT provider, event_id, intent, attempts FROM webhook_events \
         WHERE processed_at IS NULL AND next_attempt_at <= now() \
         ORDER BY received_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((provider, event_id, intent, attempts)) = row else {
        return Ok(false);
    };
    let payment: Option<Uuid> = match &intent {
        Some(reference) => {
            sqlx::query_scalar(
                "SELECT id FROM payments WHERE provider = $1 AND provider_reference = $2",
            )
            .bind(&provider)
            .bind(reference)
            .fetch_optional(&mut *tx)
            .await?
        }
        None => None,
    };
    let result = match payment {
        // Not about an intent of ours (another integration on the same account): noted.
        None => Ok("not_ours"),
        Some(id) => {
            // A savepoint, so a failed reconciliation leaves the event row to be retried.
            sqlx::query("SAVEPOINT reconcile").execute(&mut *tx).await?;
            match reconcile(&mut tx, providers, id).await {
                Ok(done) => Ok(done.as_str()),
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT reconcile")
                        .execute(&mut *tx)
                        .await?;
                    Err(e)
                }
            }
        }
    };
    match result {
        Ok(outcome) => {
            sqlx::query(
                "UPDATE webhook_events SET processed_at = now(), outcome = $3, \
                        attempts = attempts + 1, last_error = NULL \
                 WHERE provider = $1 AND event_id = $2",
            )
            .bind(&provider)
            .bind(&event_id)
            .bind(outcome)
            .execute(&mut *tx)
            .await?;
        }
        Err(error) => {
            let pause = 2_i64.saturating_pow(attempts.clamp(0, 8) as u32).min(300);
            tracing::warn!(%provider, %event_id, %error, retry_in_s = pause,
                "reconciling a webhook event failed; will retry");
            sqlx::query(
                "UPDATE webhook_events SET attempts = attempts + 1, last_error = $3, \
                        next_attempt_at = now() + make_interval(secs => $4) \
                 WHERE provider = $1 AND event_id = $2",
            )
            .bind(&provider)
            .bind(&event_id)
            .bind(error.to_string())
            .bind(pause as f64)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Processes stored events until `shutdown`: woken by `wake` when one arrives, and every
/// `every` for those waiting out a backoff (or left by a crash).
pub async fn run_worker(
    db: PgPool,
    providers: Providers,
    wake: Arc<Notify>,
    every: Duration,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    loop {
        loop {
            match process_one(&db, &providers).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "processing webhook events failed; will retry");
                    break;
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("a valid time")
    }

    #[test]
    fn a_signature_by_any_configured_secret_verifies() {
        let secrets = WebhookSecrets::new(&["whsec_old", "whsec_new"], DEFAULT_TOLERANCE);
        for secret in ["whsec_old", "whsec_new"] {
            let header = WebhookSecrets::sign(secret.as_bytes(), 1_000, BODY);
            assert_eq!(secrets.verify(Some(&header), BODY, at(1_010)), Ok(()));
        }
        let other = WebhookSecrets::sign(b"whsec_other", 1_000, BODY);
        assert_eq!(
            secrets.verify(Some(&other), BODY, at(1_010)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_or_timestamp_does_not_verify() {
        let secrets = WebhookSecrets::new(&["whsec_a"], DEFAULT_TOLERANCE);
        let header = WebhookSecrets::sign(b"whsec_a", 1_000, BODY);
        let tampered = br#"{"id":"evt_1","type":"payment_intent.canceled"}"#;
        assert_eq!(
            secrets.verify(Some(&header), tampered, at(1_000)),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replace("t=1000", "t=1001");
        assert_eq!(
            secrets.verify(Some(&moved), BODY, at(1_000)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_beyond_the_tolerance_are_refused_both_ways() {
        let secrets = WebhookSecrets::new(&["whsec_a"], Duration::from_secs(300));
        let header = WebhookSecrets::sign(b"whsec_a", 1_000, BODY);
        assert_eq!(secrets.verify(Some(&header), BODY, at(1_300)), Ok(()));
        assert_eq!(
            secrets.verify(Some(&header), BODY, at(1_301)),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            secrets.verify(Some(&header), BODY, at(699)),
            Err(SignatureError::Stale(-301))
        );
    }

    #[test]
    fn one_matching_signature_among_several_verifies() {
        let secrets = WebhookSecrets::new(&["whsec_new"], DEFAULT_TOLERANCE);
        let good = WebhookSecrets::sign(b"whsec_new", 1_000, BODY);
        let v1 = good.split_once(",v1=").expect("signed").1;
        let header = format!("t=1000,v1={},v1={v1},v0=abc", "00".repeat(32));
        assert_eq!(secrets.verify(Some(&header), BODY, at(1_000)), Ok(()));
    }

    #[test]
    fn malformed_headers_and_no_secrets_are_refused() {
        let secrets = WebhookSecrets::new(&["whsec_a"], DEFAULT_TOLERANCE);
        for header in [
            None,
            Some(""),
            Some("t=1000"),
            Some("v1=abcd"),
            Some("t=x,v1=zz"),
        ] {
            assert_eq!(
                secrets.verify(header, BODY, at(1_000)),
                Err(SignatureError::Malformed),
                "{header:?}"
            );
        }
        let none = WebhookSecrets::new::<&str>(&[], DEFAULT_TOLERANCE);
        assert!(none.is_empty());
        let header = WebhookSecrets::sign(b"", 1_000, BODY);
        assert_eq!(
            none.verify(Some(&header), BODY, at(1_000)),
            Err(SignatureError::Mismatch),
            "an empty secret list verifies nothing, not even an empty-key signature"
        );
    }
}
