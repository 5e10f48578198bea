//! The order saga's payment commands from JetStream (`tienda.payment.cmd.authorize|capture|
//! void|refund`, durable consumer `payments-commands`), each answered through the outbox in
//! the consumer's transaction, with the command's correlation.
//!
//! - Idempotent: by `payment_id` (authorize, capture, void) and `refund_id` (refund). A
//!   repeat answers with the first outcome and moves no money; the provider gets the same
//!   idempotency key (`authorize-<payment_id>`, `refund-<refund_id>`, ...), so even a repeat
//!   after a lost commit is one effect at the provider. Everything done to one payment is
//!   serialized by a transaction-scoped lock, so concurrent refunds never pass the capture.
//! - A command handled after its deadline is answered `failed` with `expired: true` and
//!   changes nothing.
//! - A command the payment's state refuses (capture a voided payment, refund past the
//!   capture) is answered `failed` with `retryable: false`. A provider that could not answer
//!   is `failed` with `retryable: true`; the same command may be sent again (a failed
//!   authorization may be authorized again).
//!
//! The provider is called inside the consumer's transaction, holding the payment's lock (see
//! the crate docs for what that costs with a network provider).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tienda_events::{
    Envelope, Message,
    payment::{
        AuthorizePayment, CapturePayment, PaymentAuthorized, PaymentCaptured, PaymentDeclined,
        PaymentFailed, PaymentOperation, PaymentRefunded, PaymentRequiresAction, PaymentVoided,
        RefundPayment, VoidPayment,
    },
};
use tienda_kit::{
    consumer::{Delivery, Handler, HandlerError},
    outbox,
};
use uuid::Uuid;

use crate::{
    SOURCE,
    challenge::Challenges,
    db::{
        attempts::{self, NewAttempt, Operation, Outcome},
        payments::{self, Authorization, NewPayment, Payment},
        refunds::{self, NewRefund, Refund},
    },
    domain::{
        money::Amount,
        payment::{self as state, PaymentStatus, Transition},
        refund,
    },
    provider::{AuthorizeOutcome, AuthorizeRequest, FollowUpRequest, Providers},
};

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct PaymentCommands {
    /// Where payments go and are followed up.
    pub providers: Providers,
    /// How 3-D Secure challenges are offered.
    pub challenges: Challenges,
}

impl Handler for PaymentCommands {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let name = delivery.subject.rsplit('.').next().unwrap_or_default();
        match name {
            "authorize" => self.authorize(conn, &delivery.envelope()?).await,
            "capture" => self.capture(conn, &delivery.envelope()?).await,
            "void" => self.void(conn, &delivery.envelope()?).await,
            "refund" => self.refund(conn, &delivery.envelope()?).await,
            other => Err(HandlerError::Permanent(anyhow::anyhow!(
                "unknown payment command {other:?} on {}",
                delivery.subject
            ))),
        }
    }
}

/// Writes the reply to `command` to the outbox.
async fn reply<T: Message, C>(
    conn: &mut PgConnection,
    data: T,
    command: &Envelope<C>,
) -> Result<(), HandlerError> {
    outbox::enqueue(conn, Envelope::caused_by(SOURCE, data, command))
        .await
        .map_err(HandlerError::from)
}

/// The parts of a `failed` reply that identify the command.
struct Failing {
    payment_id: Uuid,
    order_id: Uuid,
    refund_id: Option<Uuid>,
    operation: PaymentOperation,
}

impl Failing {
    fn refused(&self, detail: impl Into<String>) -> PaymentFailed {
        self.failed(false, false, detail)
    }

    fn expired(&self, deadline: DateTime<Utc>) -> PaymentFailed {
        self.failed(
            false,
            true,
            format!(
                "the command's deadline {deadline} passed before it was handled; nothing was done"
            ),
        )
    }

    fn failed(&self, retryable: bool, expired: bool, detail: impl Into<String>) -> PaymentFailed {
        PaymentFailed {
            payment_id: self.payment_id,
            order_id: self.order_id,
            refund_id: self.refund_id,
            operation: self.operation,
            retryable,
            expired,
            detail: detail.into(),
        }
    }
}

/// Whether a payment method looks like a card number rather than a provider token. Such a
/// command is refused and nothing of it is stored or logged.
fn is_card_number(payment_method: &str) -> bool {
    let digits = payment_method
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect::<String>();
    (12..=19).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

/// Keeps a refused refund, so a repeat of its command gets the same refusal.
async fn record_refusal(
    conn: &mut PgConnection,
    command: &RefundPayment,
    payment: &Payment,
    amount: i64,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let refusal = NewRefund {
        id: command.refund_id,
        payment_id: payment.id,
        amount,
        currency: payment.currency.as_str(),
        reason: &command.reason,
        succeeded: false,
        refunded_total: payment.refunded,
        failure: Some(detail),
        provider_reference: None,
    };
    refunds::insert(conn, &refusal).await
}

fn expired(deadline: DateTime<Utc>) -> bool {
    deadline < Utc::now()
}

impl PaymentCommands {
    async fn authorize(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<AuthorizePayment>,
    ) -> Result<(), HandlerError> {
        let c = &command.data;
        let failing = Failing {
            payment_id: c.payment_id,
            order_id: c.order_id,
            refund_id: None,
            operation: PaymentOperation::Authorize,
        };
        if expired(c.deadline) {
            return reply(conn, failing.expired(c.deadline), command).await;
        }
        payments::lock(conn, c.payment_id).await?;
        let payment = match payments::get(conn, c.payment_id).await? {
            Some(p) if p.order_id != c.order_id || p.money(p.amount) != c.amount => {
                let detail = format!(
                    "payment {} was authorized for another order or amount",
                    c.payment_id
                );
                return reply(conn, failing.refused(detail), command).await;
            }
            Some(p) if !matches!(p.status, PaymentStatus::Failed | PaymentStatus::Pending) => {
                return self.restate_authorization(conn, &p, command).await;
            }
            Some(p) => p,
            None => {
                if is_card_number(&c.payment_method) {
                    let detail = "the payment method is a card number; send the provider's token";
                    return reply(conn, failing.refused(detail), command).await;
                }
                if let Err(e) = Amount::parse(c.amount) {
                    return reply(conn, failing.refused(format!("amount: {e}")), command).await;
                }
                let provider = self.providers.default_provider();
                let new = NewPayment {
                    id: c.payment_id,
                    order_id: c.order_id,
                    customer_id: c.customer_id,
                    email: &c.email,
                    provider: provider.name(),
                    payment_method: &c.payment_method,
                    amount: c.amount,
                    correlation_id: command.correlation_id,
                    authorize_command_id: command.id,
                };
                payments::insert(conn, &new).await?
            }
        };
        let Some(provider) = self.providers.get(&payment.provider) else {
            let detail = format!("provider {} is not configured here", payment.provider);
            return reply(conn, failing.failed(true, false, detail), command).await;
        };
        let request = AuthorizeRequest {
            payment_id: payment.id,
            amount: Amount::parse(c.amount).expect("checked before it was stored"),
            payment_method: payment.payment_method.clone(),
            idempotency_key: format!("authorize-{}", payment.id),
            deadline: c.deadline,
        };
        let answer = provider.authorize(&request).await;
        let attempt = |outcome, code, detail, reference| NewAttempt {
            payment_id: payment.id,
            operation: Operation::Authorize,
            amount: Some(payment.amount),
            idempotency_key: &request.idempotency_key,
            outcome,
            code,
            detail,
            provider_reference: reference,
            command_id: Some(command.id),
        };
        match answer {
            Ok(AuthorizeOutcome::Authorized { reference }) => {
                let next = self.step(&payment, Transition::AuthorizationSucceeded)?;
                let outcome = Authorization {
                    reference: Some(&reference),
                    ..Default::default()
                };
                payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::record(
                    conn,
                    &attempt(Outcome::Succeeded, None, None, Some(&reference)),
                )
                .await?;
                let event = PaymentAuthorized {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    amount: payment.money(payment.amount),
                    provider: payment.provider.clone(),
                };
                reply(conn, event, command).await
            }
            Ok(AuthorizeOutcome::RequiresAction { reference }) => {
                let next = self.step(&payment, Transition::AuthorizationNeedsAction)?;
                let (token, expires_at) = self.challenges.open();
                let outcome = Authorization {
                    reference: Some(&reference),
                    challenge: Some((&token, expires_at)),
                    ..Default::default()
                };
                let stored = payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::record(
                    conn,
                    &attempt(Outcome::RequiresAction, None, None, Some(&reference)),
                )
                .await?;
                self.restate_authorization(conn, &stored, command).await
            }
            Ok(AuthorizeOutcome::Declined {
                reference,
                code,
                message,
            }) => {
                let next = self.step(&payment, Transition::AuthorizationDeclined)?;
                let outcome = Authorization {
                    reference: Some(&reference),
                    decline: Some((&code, &message)),
                    ..Default::default()
                };
                payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::record(
                    conn,
                    &attempt(
                        Outcome::Declined,
                        Some(&code),
                        Some(&message),
                        Some(&reference),
                    ),
                )
                .await?;
                let event = PaymentDeclined {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    code,
                    message,
                };
                reply(conn, event, command).await
            }
            Err(error) => {
                let detail = error.to_string();
                let next = self.step(&payment, Transition::AuthorizationFailed)?;
                let outcome = Authorization {
                    failure: Some(&detail),
                    ..Default::default()
                };
                payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::record(conn, &attempt(Outcome::Failed, None, Some(&detail), None))
                    .await?;
                let failed = failing.failed(error.retryable(), false, detail);
                reply(conn, failed, command).await
            }
        }
    }

    /// The answer an authorization has now (to a repeated command, or after a challenge).
    async fn restate_authorization<C>(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        command: &Envelope<C>,
    ) -> Result<(), HandlerError> {
        match payment.status {
            PaymentStatus::RequiresAction => {
                let event = PaymentRequiresAction {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    action_url: self.challenges.action_url(payment),
                    expires_at: payment.challenge_expires_at.unwrap_or_else(Utc::now),
                };
                reply(conn, event, command).await
            }
            PaymentStatus::Declined => {
                let event = PaymentDeclined {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    code: payment.decline_code.clone().unwrap_or_default(),
                    message: payment.decline_message.clone().unwrap_or_default(),
                };
                reply(conn, event, command).await
            }
            status if status.was_authorized() => {
                let event = PaymentAuthorized {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    amount: payment.money(payment.amount),
                    provider: payment.provider.clone(),
                };
                reply(conn, event, command).await
            }
            status => Err(HandlerError::Permanent(anyhow::anyhow!(
                "payment {} is {status}: no authorization to restate",
                payment.id
            ))),
        }
    }

    /// The state after `transition`; the callers only ask for what the table allows, so a
    /// refusal is a bug, not a client's fault.
    fn step(
        &self,
        payment: &Payment,
        transition: Transition,
    ) -> Result<PaymentStatus, HandlerError> {
        payment
            .status
            .next(transition)
            .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("payment {}: {e}", payment.id)))
    }

    /// The payment a follow-up command is about, locked; `Err` holds the refusal to send.
    async fn locked(
        conn: &mut PgConnection,
        failing: &Failing,
    ) -> Result<Result<Payment, PaymentFailed>, HandlerError> {
        payments::lock(conn, failing.payment_id).await?;
        Ok(match payments::get(conn, failing.payment_id).await? {
            None => Err(failing.refused(format!("no payment {}", failing.payment_id))),
            Some(p) if p.order_id != failing.order_id => {
                Err(failing.refused(format!("payment {} belongs to another order", p.id)))
            }
            Some(p) => Ok(p),
        })
    }

    async fn capture(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<CapturePayment>,
    ) -> Result<(), HandlerError> {
        let c = &command.data;
        let failing = Failing {
            payment_id: c.payment_id,
            order_id: c.order_id,
            refund_id: None,
            operation: PaymentOperation::Capture,
        };
        if expired(c.deadline) {
            return reply(conn, failing.expired(c.deadline), command).await;
        }
        let payment = match Self::locked(conn, &failing).await? {
            Ok(p) => p,
            Err(refusal) => return reply(conn, refusal, command).await,
        };
        if payment.status.is_captured() {
            let event = PaymentCaptured {
                payment_id: payment.id,
                order_id: payment.order_id,
                amount: payment.money(payment.captured),
            };
            return reply(conn, event, command).await;
        }
        let requested = match c
            .amount
            .map(|m| Amount::parse_in(m, payment.currency))
            .transpose()
        {
            Ok(requested) => requested.map(Amount::minor),
            Err(e) => return reply(conn, failing.refused(format!("amount: {e}")), command).await,
        };
        let (amount, transition) = match state::capture(payment.amount, requested) {
            Ok(capture) => capture,
            Err(e) => return reply(conn, failing.refused(e.to_string()), command).await,
        };
        let next = match payment.status.next(transition) {
            Ok(next) => next,
            Err(e) => return reply(conn, failing.refused(e.to_string()), command).await,
        };
        let request = FollowUpRequest {
            reference: payment.provider_reference.clone().unwrap_or_default(),
            amount: Some(Amount::parse(payment.money(amount)).expect("positive, known currency")),
            reason: None,
            idempotency_key: format!("capture-{}", payment.id),
            deadline: c.deadline,
        };
        if let Err(failed) = self
            .follow_up(conn, &payment, &failing, &request, command.id)
            .await?
        {
            return reply(conn, failed, command).await;
        }
        payments::set_totals(conn, payment.id, next, amount, 0).await?;
        let event = PaymentCaptured {
            payment_id: payment.id,
            order_id: payment.order_id,
            amount: payment.money(amount),
        };
        reply(conn, event, command).await
    }

    async fn void(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<VoidPayment>,
    ) -> Result<(), HandlerError> {
        let c = &command.data;
        let failing = Failing {
            payment_id: c.payment_id,
            order_id: c.order_id,
            refund_id: None,
            operation: PaymentOperation::Void,
        };
        if expired(c.deadline) {
            return reply(conn, failing.expired(c.deadline), command).await;
        }
        let payment = match Self::locked(conn, &failing).await? {
            Ok(p) => p,
            Err(refusal) => return reply(conn, refusal, command).await,
        };
        let voided = PaymentVoided {
            payment_id: payment.id,
            order_id: payment.order_id,
        };
        if payment.status == PaymentStatus::Voided {
            return reply(conn, voided, command).await;
        }
        let next = match payment.status.next(Transition::Void) {
            Ok(next) => next,
            Err(e) => return reply(conn, failing.refused(e.to_string()), command).await,
        };
        let request = FollowUpRequest {
            reference: payment.provider_reference.clone().unwrap_or_default(),
            amount: None,
            reason: None,
            idempotency_key: format!("void-{}", payment.id),
            deadline: c.deadline,
        };
        if let Err(failed) = self
            .follow_up(conn, &payment, &failing, &request, command.id)
            .await?
        {
            return reply(conn, failed, command).await;
        }
        payments::set_totals(conn, payment.id, next, 0, 0).await?;
        reply(conn, voided, command).await
    }

    async fn refund(
        &self,
        conn: &mut PgConnection,
        command: &Envelope<RefundPayment>,
    ) -> Result<(), HandlerError> {
        let c = &command.data;
        let failing = Failing {
            payment_id: c.payment_id,
            order_id: c.order_id,
            refund_id: Some(c.refund_id),
            operation: PaymentOperation::Refund,
        };
        if expired(c.deadline) {
            return reply(conn, failing.expired(c.deadline), command).await;
        }
        let payment = match Self::locked(conn, &failing).await? {
            Ok(p) => p,
            Err(refusal) => return reply(conn, refusal, command).await,
        };
        if let Some(earlier) = refunds::get(conn, c.refund_id).await? {
            return Self::restate_refund(conn, &payment, &earlier, &failing, command).await;
        }
        let amount = match Amount::parse_in(c.amount, payment.currency) {
            Ok(amount) => amount.minor(),
            Err(e) => return reply(conn, failing.refused(format!("amount: {e}")), command).await,
        };
        let next = refund::refund(payment.captured, payment.refunded, amount)
            .map_err(|e| e.to_string())
            .and_then(|t| payment.status.next(t).map_err(|e| e.to_string()));
        let next = match next {
            Ok(next) => next,
            Err(detail) => {
                record_refusal(conn, c, &payment, amount, &detail).await?;
                return reply(conn, failing.refused(detail), command).await;
            }
        };
        let request = FollowUpRequest {
            reference: payment.provider_reference.clone().unwrap_or_default(),
            amount: Some(Amount::parse(payment.money(amount)).expect("positive, known currency")),
            reason: Some(c.reason.clone()),
            idempotency_key: format!("refund-{}", c.refund_id),
            deadline: c.deadline,
        };
        let receipt = match self
            .follow_up(conn, &payment, &failing, &request, command.id)
            .await?
        {
            Ok(receipt) => receipt,
            Err(failed) => {
                if !failed.retryable {
                    record_refusal(conn, c, &payment, amount, &failed.detail).await?;
                }
                return reply(conn, failed, command).await;
            }
        };
        let total = payment.refunded + amount;
        payments::set_totals(conn, payment.id, next, payment.captured, total).await?;
        let made = NewRefund {
            id: c.refund_id,
            payment_id: payment.id,
            amount,
            currency: payment.currency.as_str(),
            reason: &c.reason,
            succeeded: true,
            refunded_total: total,
            failure: None,
            provider_reference: Some(&receipt),
        };
        refunds::insert(conn, &made).await?;
        let event = PaymentRefunded {
            refund_id: c.refund_id,
            payment_id: payment.id,
            order_id: payment.order_id,
            amount: payment.money(amount),
            refunded_total: payment.money(total),
        };
        reply(conn, event, command).await
    }

    /// The first answer to a refund id, again.
    async fn restate_refund(
        conn: &mut PgConnection,
        payment: &Payment,
        earlier: &Refund,
        failing: &Failing,
        command: &Envelope<RefundPayment>,
    ) -> Result<(), HandlerError> {
        let c = &command.data;
        if earlier.payment_id != c.payment_id || payment.money(earlier.amount) != c.amount {
            let detail = format!(
                "refund {} was made for another payment or amount",
                c.refund_id
            );
            return reply(conn, failing.refused(detail), command).await;
        }
        if earlier.status != "succeeded" {
            let detail = earlier.failure.clone().unwrap_or_default();
            return reply(conn, failing.refused(detail), command).await;
        }
        let event = PaymentRefunded {
            refund_id: earlier.id,
            payment_id: payment.id,
            order_id: payment.order_id,
            amount: payment.money(earlier.amount),
            refunded_total: payment.money(earlier.refunded_total),
        };
        reply(conn, event, command).await
    }

    /// Calls the payment's provider for a capture, void or refund and records the attempt.
    /// `Ok(Err(failed))`: the provider gave no usable answer; the state is unchanged.
    async fn follow_up(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        failing: &Failing,
        request: &FollowUpRequest,
        command_id: Uuid,
    ) -> Result<Result<String, PaymentFailed>, HandlerError> {
        let (operation, call) = match failing.operation {
            PaymentOperation::Capture => (Operation::Capture, "capture"),
            PaymentOperation::Void => (Operation::Void, "void"),
            PaymentOperation::Refund => (Operation::Refund, "refund"),
            PaymentOperation::Authorize => unreachable!("authorizations are not follow-ups"),
        };
        let answer = match self.providers.get(&payment.provider) {
            None => Err(crate::provider::ProviderError::Unavailable(format!(
                "provider {} is not configured here",
                payment.provider
            ))),
            Some(provider) => match call {
                "capture" => provider.capture(request).await,
                "void" => provider.void(request).await,
                _ => provider.refund(request).await,
            },
        };
        let (outcome, detail, reference) = match &answer {
            Ok(receipt) => (Outcome::Succeeded, None, Some(receipt.reference.as_str())),
            Err(e) => (Outcome::Failed, Some(e.to_string()), None),
        };
        let attempt = NewAttempt {
            payment_id: payment.id,
            operation,
            amount: request.amount.map(Amount::minor),
            idempotency_key: &request.idempotency_key,
            outcome,
            code: None,
            detail: detail.as_deref(),
            provider_reference: reference,
            command_id: Some(command_id),
        };
        attempts::record(conn, &attempt).await?;
        Ok(match answer {
            Ok(receipt) => Ok(receipt.reference),
            Err(e) => {
                payments::set_failure(conn, payment.id, &e.to_string()).await?;
                Err(failing.failed(e.retryable(), false, e.to_string()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_told_apart_from_tokens() {
        for pan in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "5555-5555-5555-4444",
        ] {
            assert!(is_card_number(pan), "{pan}");
        }
        for token in ["pm_card_visa", "tok_visa", "12345", ""] {
            assert!(!is_card_number(token), "{token}");
        }
    }
}
