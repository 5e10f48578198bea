//! Refunds a provider left pending, followed up until they end: the payments switch's users'
//! first complaint is refunds stuck in `pending` forever.
//!
//! A refund the provider answers `pending` is stored as such (it counts against what is left
//! to refund) and the refund command is not answered yet. This worker asks the provider about
//! each pending refund, first after 30 s and then ever less often (at most every six hours),
//! and sooner when the provider's webhook says a refund changed. When it ends:
//! - `succeeded`: the payment's totals and state move, the credit note is issued and
//!   `payment.refunded` is published, all in one transaction;
//! - `failed`: the money stays captured and `payment.failed` (a refund, not retryable) tells
//!   orders, which records it for an admin.
//!
//! Several replicas may ask about the same refund at once (a read); only one ends it, under
//! the payment's lock.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tienda_events::{
    Envelope, Message,
    payment::{PaymentFailed, PaymentOperation},
};
use tienda_kit::outbox;
use uuid::Uuid;

use crate::{
    SOURCE, commands,
    db::{
        payments::{self, Payment},
        refunds::{self, Refund},
    },
    domain::refund,
    invoice::Invoicing,
    provider::{Providers, RefundState},
};

/// How long one status call may take.
const PROVIDER_WAIT: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Pending refunds looked at per round.
const BATCH: i64 = 20;

/// What became of one pending refund in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowedUp {
    /// The provider made it.
    Succeeded,
    /// The provider gave up on it.
    Failed,
    /// Still pending, or the provider could not be asked: asked again later.
    Pending,
    /// Someone else ended it first.
    Gone,
}

/// Asks the provider about every pending refund that is due; what became of each.
pub async fn follow_up_due(
    db: &PgPool,
    providers: &Providers,
    invoicing: &Invoicing,
) -> Result<Vec<(Uuid, FollowedUp)>, sqlx::Error> {
    let due = {
        let mut conn = db.acquire().await?;
        refunds::due(&mut conn, BATCH).await?
    };
    let mut done = Vec::with_capacity(due.len());
    for id in due {
        done.push((id, follow_up(db, providers, invoicing, id).await?));
    }
    Ok(done)
}

/// Asks about one pending refund and ends it if the provider has.
async fn follow_up(
    db: &PgPool,
    providers: &Providers,
    invoicing: &Invoicing,
    id: Uuid,
) -> Result<FollowedUp, sqlx::Error> {
    let (refund, payment) = {
        let mut conn = db.acquire().await?;
        let Some(refund) = refunds::get(&mut conn, id).await? else {
            return Ok(FollowedUp::Gone);
        };
        let Some(payment) = payments::get(&mut conn, refund.payment_id).await? else {
            return Ok(FollowedUp::Gone);
        };
        (refund, payment)
    };
    if refund.status != "pending" {
        return Ok(FollowedUp::Gone);
    }
    let reference = refund.provider_reference.clone().unwrap_or_default();
    // No connection is held while the provider is asked.
    let state = match providers.get(&payment.provider) {
        None => Err(format!(
            "provider {} is not configured here",
            payment.provider
        )),
        Some(provider) => provider
            .refund_status(&reference, Utc::now() + PROVIDER_WAIT)
            .await
            .map_err(|e| e.to_string()),
    };
    let mut tx = db.begin().await?;
    payments::lock(&mut tx, payment.id).await?;
    let (Some(refund), Some(payment)) = (
        refunds::get(&mut tx, id).await?,
        payments::get(&mut tx, payment.id).await?,
    ) else {
        return Ok(FollowedUp::Gone);
    };
    if refund.status != "pending" {
        return Ok(FollowedUp::Gone);
    }
    let outcome = match state {
        Ok(RefundState::Succeeded) => succeed(&mut tx, invoicing, &payment, &refund).await?,
        Ok(RefundState::Failed { reason }) => {
            let detail = format!(
                "{} gave up on refund {reference}: {reason}; the money stays captured",
                payment.provider
            );
            refunds::settle(&mut tx, id, "failed", payment.refunded, Some(&detail)).await?;
            let failed = PaymentFailed {
                payment_id: payment.id,
                order_id: payment.order_id,
                refund_id: Some(id),
                operation: PaymentOperation::Refund,
                retryable: false,
                expired: false,
                detail,
            };
            tracing::warn!(refund_id = %id, payment_id = %payment.id, %reason,
                "a pending refund failed at the provider");
            outbox::enqueue(&mut tx, answer(failed, &payment, &refund)).await?;
            FollowedUp::Failed
        }
        Ok(RefundState::Pending) => {
            refunds::check_later(&mut tx, id).await?;
            FollowedUp::Pending
        }
        Err(error) => {
            tracing::warn!(refund_id = %id, %error,
                "could not ask the provider about a pending refund; will ask again");
            refunds::check_later(&mut tx, id).await?;
            FollowedUp::Pending
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The provider made the refund: totals, state, credit note and `payment.refunded`.
async fn succeed(
    tx: &mut sqlx::PgConnection,
    invoicing: &Invoicing,
    payment: &Payment,
    pending: &Refund,
) -> Result<FollowedUp, sqlx::Error> {
    // The bound held when the refund was accepted (pending ones counted), so it holds now.
    let next = refund::refund(payment.captured, payment.refunded, pending.amount)
        .map_err(|e| e.to_string())
        .and_then(|t| payment.status.next(t).map_err(|e| e.to_string()));
    let next = match next {
        Ok(next) => next,
        Err(error) => {
            // Only a ledger changed by hand gets here: leave it for an admin, loudly.
            tracing::error!(refund_id = %pending.id, payment_id = %payment.id, %error,
                "a refund the provider made does not fit the payment; check the ledger");
            refunds::check_later(tx, pending.id).await?;
            return Ok(FollowedUp::Pending);
        }
    };
    let event = commands::refunded(
        tx,
        invoicing,
        payment,
        next,
        pending.id,
        pending.amount,
        &pending.reason,
    )
    .await?;
    refunds::settle(
        tx,
        pending.id,
        "succeeded",
        payment.refunded + pending.amount,
        None,
    )
    .await?;
    tracing::info!(refund_id = %pending.id, payment_id = %payment.id, "a pending refund succeeded");
    outbox::enqueue(tx, answer(event, payment, pending)).await?;
    Ok(FollowedUp::Succeeded)
}

/// The late answer to the refund command: in the payment's saga, caused by the command.
fn answer<T: Message>(data: T, payment: &Payment, refund: &Refund) -> Envelope<T> {
    Envelope {
        correlation_id: refund.correlation_id.unwrap_or(payment.correlation_id),
        causation_id: refund.command_id,
        ..Envelope::new(SOURCE, data)
    }
}

/// Follows pending refunds up every `every` (or when woken) until shutdown.
pub async fn run(
    db: PgPool,
    providers: Providers,
    invoicing: Invoicing,
    wake: Arc<tokio::sync::Notify>,
    every: Duration,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    loop {
        loop {
            match follow_up_due(&db, &providers, &invoicing).await {
                Ok(done) if done.len() as i64 == BATCH => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "following up pending refunds failed; will retry");
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
