//! 3-D Secure challenges of the sandbox provider: an authorization that `requires_action`
//! gets a secret token and an action URL on our own API
//! (`POST /v1/payments/{id}/challenges/{token}`), where the customer completes or abandons
//! it. Completing authorizes the payment (`payment.authorized`); abandoning — or answering
//! after the challenge lapsed — declines it with Stripe's
//! `payment_intent_authentication_failure` (`payment.declined`). Either event carries the
//! saga's correlation from the authorize command.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
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
};

/// Stripe's code for a failed or abandoned authentication.
pub const ABANDONED_CODE: &str = "payment_intent_authentication_failure";

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

impl Challenges {
    /// A new challenge's secret and when it lapses.
    pub fn open(&self) -> (String, DateTime<Utc>) {
        let token = Uuid::new_v4().simple().to_string();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::minutes(15));
        (token, Utc::now() + ttl)
    }

    /// Where the customer answers `payment`'s open challenge.
    pub fn action_url(&self, payment: &Payment) -> String {
        format!(
            "{}/v1/payments/{}/challenges/{}",
            self.public_url.trim_end_matches('/'),
            payment.id,
            payment.challenge_token.as_deref().unwrap_or_default()
        )
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

/// Applies the customer's answer to payment `id`'s open challenge `token`, in the caller's
/// transaction, and returns the payment. A lapsed challenge is declined whatever the answer.
pub async fn answer(
    conn: &mut PgConnection,
    id: Uuid,
    token: &str,
    outcome: ChallengeOutcome,
) -> Result<Payment, Error> {
    payments::lock(conn, id).await?;
    let not_found = || Error::NotFound(format!("No open challenge {token} on payment {id}."));
    let payment = payments::get(conn, id).await?.ok_or_else(not_found)?;
    if payment.challenge_token.as_deref() != Some(token) {
        return Err(not_found());
    }
    if payment.status != PaymentStatus::RequiresAction {
        return Err(Error::Conflict(format!(
            "The challenge was already answered; the payment is {}.",
            payment.status
        )));
    }
    let lapsed = payment
        .challenge_expires_at
        .is_some_and(|at| at < Utc::now());
    let completed = outcome == ChallengeOutcome::Complete && !lapsed;
    let transition = if completed {
        Transition::ChallengeCompleted
    } else {
        Transition::ChallengeAbandoned
    };
    let next = payment
        .status
        .next(transition)
        .map_err(|e| Error::Conflict(e.to_string()))?;
    let message = if lapsed {
        "The 3-D Secure challenge was not answered in time."
    } else {
        "The customer did not complete 3-D Secure authentication."
    };
    let stored = payments::set_authorization(
        conn,
        id,
        next,
        &Authorization {
            decline: (!completed).then_some((ABANDONED_CODE, message)),
            ..Default::default()
        },
    )
    .await?;
    let attempt = NewAttempt {
        payment_id: id,
        operation: Operation::Challenge,
        amount: None,
        idempotency_key: token,
        outcome: if completed {
            Outcome::Succeeded
        } else {
            Outcome::Declined
        },
        code: (!completed).then_some(ABANDONED_CODE),
        detail: (!completed).then_some(message),
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
        outbox::enqueue(conn, continuing(event, &payment)).await?;
    } else {
        let event = PaymentDeclined {
            payment_id: id,
            order_id: payment.order_id,
            code: ABANDONED_CODE.to_owned(),
            message: message.to_owned(),
        };
        outbox::enqueue(conn, continuing(event, &payment)).await?;
    }
    Ok(stored)
}
