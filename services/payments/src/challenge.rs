//! 3-D Secure challenges of the sandbox provider: an authorization that `requires_action`
//! gets a secret token and an action URL on our own API
//! (`POST /v1/payments/{id}/challenges/{token}`), where the customer completes or abandons
//! it. Completing authorizes the payment (`payment.authorized`); abandoning — or answering
//! after the challenge lapsed — declines it with Stripe's
//! `payment_intent_authentication_failure` (`payment.declined`). Either event carries the
//! saga's correlation from the authorize command. Nobody answering is the same as abandoning:
//! [`sweep`] declines challenges once they lapse, so the saga is never left waiting.
//!
//! The token is a credential: only its SHA-256 is stored, it is compared in constant time,
//! and it is never copied anywhere else (the attempt's key is `challenge-<payment_id>`). As
//! the token cannot be read back, a repeated authorize command is given a fresh one
//! ([`Challenges::reissue`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use tienda_events::{
    Envelope, Message,
    payment::{PaymentAuthorized, PaymentDeclined},
};
use tienda_kit::outbox;
use uuid::Uuid;

use crate::{
    SOURCE,
    db::{
        attempts::{self, NewAttempt, Operation, Outcome},
        payments::{self, Authorization, Payment},
    },
    domain::payment::{PaymentStatus, Transition},
    error::Error,
    provider::{FollowUpRequest, IntentState, Provider, Providers},
};

/// Stripe's code for a failed or abandoned authentication.
pub const ABANDONED_CODE: &str = "payment_intent_authentication_failure";

/// Why a challenge nobody answered in time was declined.
const LAPSED: &str = "The 3-D Secure challenge was not answered in time.";

/// Why an abandoned challenge was declined.
const ABANDONED: &str = "The customer did not complete 3-D Secure authentication.";

/// How challenges are offered.
#[derive(Debug, Clone)]
pub struct Challenges {
    /// Prefix of action URLs (the gateway's public address); empty: URLs are paths.
    pub public_url: String,
    /// How long a challenge stays open.
    pub ttl: Duration,
}

/// The customer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeOutcome {
    /// Passed the challenge.
    Complete,
    /// Gave up, or failed it.
    Abandon,
}

/// A new challenge token: 122 random bits.
pub fn new_token() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The SHA-256 of a token, as stored.
pub fn token_digest(token: &str) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// Whether `token` is the one whose digest was stored, in time independent of where they
/// differ: both sides are fixed-length digests folded with XOR.
pub fn token_matches(stored: &[u8], token: &str) -> bool {
    let presented = token_digest(token);
    if stored.len() != presented.len() {
        return false;
    }
    stored
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

impl Challenges {
    /// A new challenge's token and when it lapses.
    pub fn open(&self) -> (String, DateTime<Utc>) {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::minutes(15));
        (new_token(), Utc::now() + ttl)
    }

    /// Where the customer answers payment `id`'s challenge with `token`.
    pub fn action_url(&self, id: Uuid, token: &str) -> String {
        format!(
            "{}/v1/payments/{id}/challenges/{token}",
            self.public_url.trim_end_matches('/'),
        )
    }

    /// A fresh token for `payment`'s open challenge (same deadline), stored as its digest;
    /// the earlier token stops working. Returns the new action URL.
    pub async fn reissue(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
    ) -> Result<String, sqlx::Error> {
        let token = new_token();
        payments::set_challenge_token(conn, payment.id, &token_digest(&token)).await?;
        Ok(self.action_url(payment.id, &token))
    }
}

/// An event continuing the saga of `payment` (correlated with its authorize command).
fn continuing<T: Message>(data: T, payment: &Payment) -> Envelope<T> {
    Envelope {
        correlation_id: payment.correlation_id,
        causation_id: Some(payment.authorize_command_id),
        ..Envelope::new(SOURCE, data)
    }
}

/// Payment `id` with its challenge `token` checked, locked in the caller's transaction. An
/// unknown payment or a wrong token is `NotFound`; the right token on a challenge already
/// answered (or declined by the sweeper) is `Conflict`.
pub async fn open_challenge(
    conn: &mut PgConnection,
    id: Uuid,
    token: &str,
) -> Result<Payment, Error> {
    payments::lock(conn, id).await?;
    let not_found = || {
        Error::NotFound(format!(
            "No open challenge with this token on payment {id}."
        ))
    };
    let payment = payments::get(conn, id).await?.ok_or_else(not_found)?;
    let known = payment
        .challenge_token_sha256
        .as_deref()
        .is_some_and(|stored| token_matches(stored, token));
    if !known {
        return Err(not_found());
    }
    if payment.status != PaymentStatus::RequiresAction {
        return Err(Error::Conflict(format!(
            "The challenge was already answered; the payment is {}.",
            payment.status
        )));
    }
    Ok(payment)
}

/// Applies the customer's answer to payment `id`'s open challenge `token`, in the caller's
/// transaction, and returns the payment. A lapsed challenge is declined whatever the answer.
/// Errors as [`open_challenge`]'s.
pub async fn answer(
    conn: &mut PgConnection,
    providers: &Providers,
    id: Uuid,
    token: &str,
    outcome: ChallengeOutcome,
) -> Result<Payment, Error> {
    let payment = open_challenge(conn, id, token).await?;
    let lapsed = payment
        .challenge_expires_at
        .is_some_and(|at| at < Utc::now());
    if lapsed {
        return conclude(conn, &payment, Some((ABANDONED_CODE, LAPSED))).await;
    }
    if let Some(provider) = providers.get(&payment.provider)
        && provider.challenges_at_provider()
    {
        return answer_at_provider(conn, &payment, provider.as_ref(), outcome).await;
    }
    let decline = (outcome == ChallengeOutcome::Abandon).then_some((ABANDONED_CODE, ABANDONED));
    conclude(conn, &payment, decline).await
}

/// How long a provider has to answer while a customer waits on the challenge page.
const PROVIDER_WAIT: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The customer's answer to a challenge they completed with the provider (Stripe.js): their
/// word decides nothing; the provider's state of the intent does. An abandoned challenge is
/// cancelled at the provider too (so nothing is held if the customer finishes it later).
async fn answer_at_provider(
    conn: &mut PgConnection,
    payment: &Payment,
    provider: &dyn Provider,
    outcome: ChallengeOutcome,
) -> Result<Payment, Error> {
    let Some(reference) = payment.provider_reference.as_deref() else {
        return Err(Error::Conflict(format!(
            "Payment {} has no authorization at {} to complete.",
            payment.id, payment.provider
        )));
    };
    match outcome {
        ChallengeOutcome::Complete => {
            let intent = provider
                .retrieve(reference, Utc::now() + PROVIDER_WAIT)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            conclude_from(conn, payment, &intent.state)
                .await?
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "{} has not completed the authentication yet; finish it in the \
                         provider's window (Stripe.js handleNextAction with the client secret \
                         from GET on this URL), then answer again.",
                        payment.provider
                    ))
                })
        }
        ChallengeOutcome::Abandon => {
            let cancel = FollowUpRequest {
                reference: reference.to_owned(),
                capture_reference: None,
                payment_method: payment.payment_method.clone(),
                amount: None,
                reason: None,
                idempotency_key: format!("void-challenge-{}", payment.id),
                deadline: Utc::now() + PROVIDER_WAIT,
            };
            if let Err(e) = provider.void(&cancel).await {
                // A later webhook finding the intent held voids it (webhooks::reconcile).
                tracing::warn!(payment_id = %payment.id, error = %e,
                    "cancelling an abandoned challenge at the provider failed");
            }
            conclude(conn, payment, Some((ABANDONED_CODE, ABANDONED))).await
        }
    }
}

/// Concludes `payment`'s open challenge from the provider's state of the intent: authorized
/// when it is held, declined when it failed or was cancelled. `None`: the provider has no
/// conclusion yet (still waiting for the customer, or processing).
pub async fn conclude_from(
    conn: &mut PgConnection,
    payment: &Payment,
    state: &IntentState,
) -> Result<Option<Payment>, Error> {
    let decline = match state {
        IntentState::Authorized | IntentState::Captured => None,
        IntentState::Declined { code, message } => Some((code.as_str(), message.as_str())),
        IntentState::Canceled => Some((ABANDONED_CODE, ABANDONED)),
        IntentState::RequiresAction | IntentState::Processing => return Ok(None),
    };
    conclude(conn, payment, decline).await.map(Some)
}

/// Declines payment `id`'s challenge if it is still open and lapsed (re-checked under the
/// payment's lock); returns whether it did.
pub async fn decline_if_lapsed(conn: &mut PgConnection, id: Uuid) -> Result<bool, Error> {
    payments::lock(conn, id).await?;
    let Some(payment) = payments::get(conn, id).await? else {
        return Ok(false);
    };
    let lapsed = payment
        .challenge_expires_at
        .is_some_and(|at| at < Utc::now());
    if payment.status != PaymentStatus::RequiresAction || !lapsed {
        return Ok(false);
    }
    conclude(conn, &payment, Some((ABANDONED_CODE, LAPSED))).await?;
    Ok(true)
}

/// Ends `payment`'s open challenge: authorized without `decline`, else declined with its code
/// and message; records the attempt and continues the saga with the event.
async fn conclude(
    conn: &mut PgConnection,
    payment: &Payment,
    decline: Option<(&str, &str)>,
) -> Result<Payment, Error> {
    let id = payment.id;
    let completed = decline.is_none();
    let transition = if completed {
        Transition::ChallengeCompleted
    } else {
        Transition::ChallengeAbandoned
    };
    let next = payment
        .status
        .next(transition)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let stored = payments::set_authorization(
        conn,
        id,
        next,
        &Authorization {
            decline,
            ..Default::default()
        },
    )
    .await?;
    let key = format!("challenge-{id}");
    let attempt = NewAttempt {
        payment_id: id,
        operation: Operation::Challenge,
        amount: None,
        idempotency_key: &key,
        outcome: if completed {
            Outcome::Succeeded
        } else {
            Outcome::Declined
        },
        code: decline.map(|(code, _)| code),
        detail: decline.map(|(_, message)| message),
        provider_reference: payment.provider_reference.as_deref(),
        command_id: None,
    };
    attempts::record(conn, &attempt).await?;
    if completed {
        let event = PaymentAuthorized {
            payment_id: id,
            order_id: payment.order_id,
            amount: payment.money(payment.amount),
            provider: payment.provider.clone(),
        };
        outbox::enqueue(conn, continuing(event, payment)).await?;
    } else {
        let (code, message) = decline.unwrap_or_default();
        let event = PaymentDeclined {
            payment_id: id,
            order_id: payment.order_id,
            code: code.to_owned(),
            message: message.to_owned(),
        };
        outbox::enqueue(conn, continuing(event, payment)).await?;
    }
    Ok(stored)
}

/// How many lapsed challenges one sweep declines at most.
const SWEEP_BATCH: i64 = 100;

/// Declines every challenge that lapsed unanswered, each in its own transaction; returns how
/// many it declined.
pub async fn sweep(db: &PgPool) -> Result<usize, Error> {
    let ids = {
        let mut conn = db.acquire().await?;
        payments::lapsed_challenges(&mut conn, Utc::now(), SWEEP_BATCH).await?
    };
    let mut declined = 0;
    for id in ids {
        let mut tx = db.begin().await?;
        if decline_if_lapsed(&mut tx, id).await? {
            declined += 1;
        }
        tx.commit().await?;
    }
    Ok(declined)
}

/// Sweeps every `every` until `shutdown` (the first sweep, at start, is the caller's).
pub async fn run_sweeper(db: PgPool, every: Duration, shutdown: tienda_kit::shutdown::Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.wait() => return,
        }
        match sweep(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(declined = n, "declined lapsed 3-D Secure challenges"),
            Err(e) => tracing::warn!(error = %e, "sweeping lapsed challenges failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_whose_digest_was_stored_matches() {
        let token = new_token();
        let stored = token_digest(&token);
        assert!(token_matches(&stored, &token));
        assert!(!token_matches(&stored, &new_token()));
        assert!(!token_matches(&stored, ""));
        assert!(!token_matches(&stored[..16], &token), "a truncated digest");
        assert_ne!(
            &stored[..],
            token.as_bytes(),
            "the token itself is not what is kept"
        );
    }
}
