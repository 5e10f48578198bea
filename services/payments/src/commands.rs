//! The order saga's payment commands from JetStream (`tienda.payment.cmd.authorize|capture|
//! void|refund`, durable consumer `payments-commands`), each answered through the outbox in
//! the consumer's transaction, with the command's correlation.
//!
//! - Idempotent: by `payment_id` (authorize, capture, void) and `refund_id` (refund). A
//!   repeat answers with the payment's outcome and moves no money; the provider gets the same
//!   idempotency key (`authorize-<payment_id>`, `refund-<refund_id>`, ...). Everything done to
//!   one payment is serialized by a transaction-scoped lock, so concurrent refunds never pass
//!   the capture.
//! - Each provider call is first recorded as a `started` attempt, committed on its own; the
//!   answer is recorded with the command's transaction (see the crate docs).
//! - A command handled after its deadline is answered `failed` with `expired: true` and
//!   changes nothing — unless what is known says otherwise: an outcome already recorded is
//!   restated, and a `started` attempt whose answer was lost is repeated with its key to learn
//!   it. An authorization learnt that way after the deadline is voided (answered `failed`,
//!   expired, nothing held); a capture, void or refund that happened is answered as such.
//! - A command the payment's state refuses (capture a voided payment, refund past the
//!   capture) is answered `failed` with `retryable: false`. A provider that could not answer
//!   is `failed` with `retryable: true`; the same command may be sent again (a failed
//!   authorization may be authorized again).
//! - A payment method that contains a card number is refused and never stored, logged or
//!   repeated in any detail.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
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
    challenge::{Challenges, token_digest},
    db::{
        attempts::{self, NewAttempt, Operation, Outcome},
        fraud,
        payments::{self, Authorization, NewPayment, Payment},
        refunds::{self, NewRefund, Refund},
    },
    domain::{
        fraud::{Rules, Verdict, assess},
        money::Amount,
        payment::{self as state, PaymentStatus, Transition},
        refund,
    },
    geoip::GeoIp,
    invoice::{self, Invoicing},
    provider::{AuthorizeOutcome, AuthorizeRequest, FollowUpRequest, Provider, Providers, Receipt},
};

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct PaymentCommands {
    /// For the `started` attempts committed before each provider call, outside the command's
    /// transaction.
    pub db: PgPool,
    /// Where payments go and are followed up.
    pub providers: Providers,
    /// How 3-D Secure challenges are offered.
    pub challenges: Challenges,
    /// How invoices and credit notes are issued.
    pub invoicing: Invoicing,
    /// Countries of IP addresses, for the fraud rules (empty: none known).
    pub geoip: Arc<GeoIp>,
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

/// A declined authorization: the code and the customer's sentence as sent in
/// `payment.declined`, the attempt's detail, and the provider's reference (none when the
/// provider was never asked).
struct Decline {
    code: String,
    message: String,
    detail: String,
    reference: Option<String>,
}

/// Runs the fraud rules on a new payment unless it was screened before, recording the
/// decision; the reasons when it is blocked. The provider is asked about the card first
/// (fingerprint, country); if it cannot say, the card rules stay silent rather than the
/// payment wait.
async fn screen(
    conn: &mut PgConnection,
    payment: &Payment,
    provider: Option<&dyn Provider>,
    geoip: &GeoIp,
    deadline: DateTime<Utc>,
) -> Result<Option<String>, HandlerError> {
    if fraud::get(conn, payment.id).await?.is_some() {
        return Ok(None);
    }
    let mut payment = payment.clone();
    if let Some(provider) = provider {
        let customer = payment
            .customer_id
            .map_or_else(|| payment.email.clone(), |id| id.to_string());
        match provider
            .describe(&payment.payment_method, &customer, deadline)
            .await
        {
            Ok(Some(card)) => {
                payments::set_card(conn, payment.id, &card.fingerprint, card.country.as_deref())
                    .await?;
                payment.card_fingerprint = Some(card.fingerprint);
                payment.card_country = card.country;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(payment_id = %payment.id, error = %e,
                    "the provider could not describe the card; the card rules are skipped");
            }
        }
    }
    let ip_country = payment
        .client_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .and_then(|ip| geoip.country(ip));
    let signals = fraud::signals(conn, &payment, ip_country).await?;
    let (verdict, reasons) = assess(&Rules::default(), &signals, payment.money(payment.amount));
    fraud::record(conn, payment.id, verdict, &reasons).await?;
    Ok((verdict == Verdict::Block).then(|| {
        let why: Vec<&str> = reasons.iter().map(|r| r.detail.as_str()).collect();
        why.join("; ")
    }))
}

/// A refund the provider made: the payment's totals and state move, the credit note is
/// issued, and the event to publish.
pub(crate) async fn refunded(
    conn: &mut PgConnection,
    invoicing: &Invoicing,
    payment: &Payment,
    next: PaymentStatus,
    refund_id: Uuid,
    amount: i64,
    reason: &str,
) -> Result<PaymentRefunded, sqlx::Error> {
    let total = payment.refunded + amount;
    payments::set_totals(conn, payment.id, next, payment.captured, total).await?;
    invoice::issue_for_refund(conn, invoicing, payment, refund_id, amount, reason).await?;
    Ok(PaymentRefunded {
        refund_id,
        payment_id: payment.id,
        order_id: payment.order_id,
        amount: payment.money(amount),
        refunded_total: payment.money(total),
    })
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
#[derive(Clone, Copy)]
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

/// Separators people and tools put between a card number's digits.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '.' | '-' | '_')
}

/// Whether the Luhn checksum of `digits` holds (every card number's does).
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            match i % 2 {
                0 => d,
                _ if d * 2 > 9 => d * 2 - 9,
                _ => d * 2,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether a run of digits is (or holds) a card number: 13-19 digits passing Luhn; a longer
/// run if any 13-19 of its consecutive digits do (a card number with digits glued on).
fn holds_card_number(run: &[u8]) -> bool {
    match run.len() {
        0..13 => false,
        13..=19 => luhn(run),
        _ => (13..=19).any(|len| run.windows(len).any(luhn)),
    }
}

/// Whether a payment method carries a card number rather than being a provider token: a run
/// of 13-19 digits, separators (space, dot, dash, underscore) ignored, that passes Luhn,
/// anywhere in it (`4242.4242.4242.4242`, `tok_4242424242424242`). Such a command is refused
/// and nothing of it is stored, logged or repeated.
fn is_card_number(payment_method: &str) -> bool {
    let mut run = Vec::new();
    for c in payment_method.chars() {
        if let Some(digit) = c.to_digit(10) {
            run.push(digit as u8);
        } else if !is_separator(c) {
            if holds_card_number(&run) {
                return true;
            }
            run.clear();
        }
    }
    holds_card_number(&run)
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
        status: "refused",
        refunded_total: payment.refunded,
        failure: Some(detail),
        provider_reference: None,
        command: None,
    };
    refunds::insert(conn, &refusal).await
}

fn expired(deadline: DateTime<Utc>) -> bool {
    deadline < Utc::now()
}

/// The deadline of a provider call: the command's, or — when a call whose answer was lost
/// is repeated after it — a short while to learn the outcome.
fn call_deadline(deadline: DateTime<Utc>, late: bool) -> DateTime<Utc> {
    if late {
        Utc::now() + chrono::Duration::seconds(30)
    } else {
        deadline
    }
}

/// A provider call repeated after the deadline got no answer: the outcome is unknown, so the
/// command is retried later (and dead-lettered for an operator if it never is).
fn outcome_unknown(payment_id: Uuid, error: &crate::provider::ProviderError) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!(
        "payment {payment_id}: a provider call whose answer was lost could not be repeated: {error}"
    ))
}

impl PaymentCommands {
    /// Records `attempt` as started — with `new_payment` first, for a new payment — in its own
    /// committed transaction, so a lost commit of the command leaves a trace; returns the
    /// attempt's id and the payment, if inserted.
    async fn start_attempt(
        &self,
        new_payment: Option<&NewPayment<'_>>,
        attempt: &NewAttempt<'_>,
    ) -> Result<(Uuid, Option<Payment>), HandlerError> {
        let mut tx = self.db.begin().await?;
        let payment = match new_payment {
            Some(new) => Some(payments::insert(&mut tx, new).await?),
            None => None,
        };
        let id = attempts::record(&mut tx, attempt).await?;
        tx.commit().await?;
        Ok((id, payment))
    }

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
        let key = format!("authorize-{}", c.payment_id);
        let started = |outcome| NewAttempt {
            payment_id: c.payment_id,
            operation: Operation::Authorize,
            amount: Some(c.amount.amount),
            idempotency_key: &key,
            outcome,
            code: None,
            detail: None,
            provider_reference: None,
            command_id: Some(command.id),
        };
        payments::lock(conn, c.payment_id).await?;
        let (payment, attempt_id) = match payments::get(conn, c.payment_id).await? {
            Some(p) if p.order_id != c.order_id || p.money(p.amount) != c.amount => {
                let detail = format!(
                    "payment {} was authorized for another order or amount",
                    c.payment_id
                );
                return reply(conn, failing.refused(detail), command).await;
            }
            Some(p) if !matches!(p.status, PaymentStatus::Failed | PaymentStatus::Pending) => {
                return self.restate_authorization(conn, &p, None, command).await;
            }
            Some(p) => match attempts::unresolved(conn, p.id, &key).await? {
                Some(attempt_id) => (p, attempt_id),
                None if expired(c.deadline) => {
                    return reply(conn, failing.expired(c.deadline), command).await;
                }
                None => {
                    let (attempt_id, _) =
                        self.start_attempt(None, &started(Outcome::Started)).await?;
                    (p, attempt_id)
                }
            },
            None => {
                if expired(c.deadline) {
                    return reply(conn, failing.expired(c.deadline), command).await;
                }
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
                    // Signals, not contracts: what is malformed is dropped, not refused.
                    client_ip: c
                        .client_ip
                        .as_deref()
                        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
                        .map(|ip| ip.to_string()),
                    billing_country: c
                        .billing_country
                        .as_deref()
                        .map(str::trim)
                        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                        .map(str::to_ascii_uppercase),
                };
                let (attempt_id, payment) = self
                    .start_attempt(Some(&new), &started(Outcome::Started))
                    .await?;
                (payment.expect("inserted with the attempt"), attempt_id)
            }
        };
        // The fraud rules, once per payment (a command retried after a crash screens again:
        // the decision is written in this transaction).
        let screened = screen(
            conn,
            &payment,
            self.providers.get(&payment.provider).as_deref(),
            &self.geoip,
            // The card lookup may take a moment of the command's time, not all of it.
            c.deadline.min(Utc::now() + chrono::Duration::seconds(5)),
        )
        .await?;
        if let Some(why) = screened {
            tracing::warn!(payment_id = %payment.id, %why, "payment blocked by the fraud rules");
            // The customer is not told which rule: that would teach how to get around it.
            let decline = Decline {
                code: "fraud_blocked".into(),
                message:
                    "The payment was declined; use another payment method or contact the shop."
                        .into(),
                detail: why,
                reference: None,
            };
            return self
                .decline(conn, &payment, attempt_id, decline, command)
                .await;
        }
        // Only a call whose answer was lost is made after the deadline.
        let late = expired(c.deadline);
        let Some(provider) = self.providers.get(&payment.provider) else {
            let detail = format!("provider {} is not configured here", payment.provider);
            attempts::finish(conn, attempt_id, Outcome::Failed, None, Some(&detail), None).await?;
            return reply(conn, failing.failed(true, late, detail), command).await;
        };
        let request = AuthorizeRequest {
            payment_id: payment.id,
            amount: Amount::parse(c.amount).expect("checked before it was stored"),
            payment_method: payment.payment_method.clone(),
            idempotency_key: key.clone(),
            deadline: call_deadline(c.deadline, late),
        };
        let answer = provider.authorize(&request).await;
        match answer {
            Ok(AuthorizeOutcome::Authorized { reference }) => {
                let next = self.step(&payment, Transition::AuthorizationSucceeded)?;
                let outcome = Authorization {
                    reference: Some(&reference),
                    ..Default::default()
                };
                let stored = payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::finish(
                    conn,
                    attempt_id,
                    Outcome::Succeeded,
                    None,
                    None,
                    Some(&reference),
                )
                .await?;
                if late {
                    return self
                        .void_after_deadline(conn, &stored, &failing, command)
                        .await;
                }
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
                let digest = token_digest(&token);
                let outcome = Authorization {
                    reference: Some(&reference),
                    challenge: Some((&digest, expires_at)),
                    ..Default::default()
                };
                let stored = payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::finish(
                    conn,
                    attempt_id,
                    Outcome::RequiresAction,
                    None,
                    None,
                    Some(&reference),
                )
                .await?;
                if late {
                    return self
                        .void_after_deadline(conn, &stored, &failing, command)
                        .await;
                }
                self.restate_authorization(conn, &stored, Some(&token), command)
                    .await
            }
            Ok(AuthorizeOutcome::Declined {
                reference,
                code,
                message,
            }) => {
                // Late or not, nothing is held: the decline is the outcome.
                let decline = Decline {
                    detail: message.clone(),
                    code,
                    message,
                    reference: Some(reference),
                };
                self.decline(conn, &payment, attempt_id, decline, command)
                    .await
            }
            Err(error) if late && error.retryable() => Err(outcome_unknown(payment.id, &error)),
            Err(error) => {
                let detail = error.to_string();
                let next = self.step(&payment, Transition::AuthorizationFailed)?;
                let outcome = Authorization {
                    failure: Some(&detail),
                    ..Default::default()
                };
                payments::set_authorization(conn, payment.id, next, &outcome).await?;
                attempts::finish(conn, attempt_id, Outcome::Failed, None, Some(&detail), None)
                    .await?;
                let failed = failing.failed(error.retryable() && !late, late, detail);
                reply(conn, failed, command).await
            }
        }
    }

    /// Records `decline` on the payment and its attempt and answers `payment.declined`.
    async fn decline(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        attempt_id: Uuid,
        decline: Decline,
        command: &Envelope<AuthorizePayment>,
    ) -> Result<(), HandlerError> {
        let next = self.step(payment, Transition::AuthorizationDeclined)?;
        let outcome = Authorization {
            reference: decline.reference.as_deref(),
            decline: Some((&decline.code, &decline.message)),
            ..Default::default()
        };
        payments::set_authorization(conn, payment.id, next, &outcome).await?;
        attempts::finish(
            conn,
            attempt_id,
            Outcome::Declined,
            Some(&decline.code),
            Some(&decline.detail),
            decline.reference.as_deref(),
        )
        .await?;
        let event = PaymentDeclined {
            payment_id: payment.id,
            order_id: payment.order_id,
            code: decline.code,
            message: decline.message,
        };
        reply(conn, event, command).await
    }

    /// An authorization learnt only after the authorize command's deadline (its first answer
    /// was lost): releases it and answers `failed` (expired, nothing held). If the provider
    /// refuses the void, the authorization is answered as it is, so the saga compensates.
    async fn void_after_deadline(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        failing: &Failing,
        command: &Envelope<AuthorizePayment>,
    ) -> Result<(), HandlerError> {
        let next = self.step(payment, Transition::Void)?;
        let request = FollowUpRequest {
            reference: payment.provider_reference.clone().unwrap_or_default(),
            capture_reference: None,
            payment_method: payment.payment_method.clone(),
            amount: None,
            reason: None,
            idempotency_key: format!("void-{}", payment.id),
            deadline: call_deadline(command.data.deadline, true),
        };
        let voiding = Failing {
            operation: PaymentOperation::Void,
            ..*failing
        };
        match self
            .follow_up(conn, payment, &voiding, &request, command.id, true)
            .await?
        {
            Ok(_) => {
                payments::set_totals(conn, payment.id, next, 0, 0).await?;
                let detail = format!(
                    "the command's deadline {} passed before its outcome was recorded; the \
                     provider's authorization was voided: nothing is held",
                    command.data.deadline
                );
                reply(conn, failing.failed(false, true, detail), command).await
            }
            Err(_) => {
                self.restate_authorization(conn, payment, None, command)
                    .await
            }
        }
    }

    /// The answer an authorization has now (to a repeated command, or after a challenge).
    /// `token`: the challenge's token when it was just opened; otherwise a new one is issued
    /// (only its digest is stored, so the earlier URL cannot be rebuilt).
    async fn restate_authorization<C>(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        token: Option<&str>,
        command: &Envelope<C>,
    ) -> Result<(), HandlerError> {
        match payment.status {
            PaymentStatus::RequiresAction => {
                let action_url = match token {
                    Some(token) => self.challenges.action_url(payment.id, token),
                    None => self.challenges.reissue(conn, payment).await?,
                };
                let event = PaymentRequiresAction {
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    action_url,
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
            PaymentStatus::Voided => {
                let event = PaymentVoided {
                    payment_id: payment.id,
                    order_id: payment.order_id,
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

    /// Whether a command past its deadline must still be carried out: a call under `key`
    /// started and its answer was lost. `None`: the deadline has not passed.
    async fn lost_call(
        conn: &mut PgConnection,
        payment_id: Uuid,
        key: &str,
        deadline: DateTime<Utc>,
    ) -> Result<Option<bool>, HandlerError> {
        if !expired(deadline) {
            return Ok(None);
        }
        Ok(Some(
            attempts::unresolved(conn, payment_id, key).await?.is_some(),
        ))
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
        let key = format!("capture-{}", payment.id);
        let late = match Self::lost_call(conn, payment.id, &key, c.deadline).await? {
            Some(false) => return reply(conn, failing.expired(c.deadline), command).await,
            lost => lost.is_some(),
        };
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
            capture_reference: None,
            payment_method: payment.payment_method.clone(),
            amount: Some(Amount::parse(payment.money(amount)).expect("positive, known currency")),
            reason: None,
            idempotency_key: key,
            deadline: call_deadline(c.deadline, late),
        };
        if let Err(failed) = self
            .follow_up(conn, &payment, &failing, &request, command.id, late)
            .await?
        {
            return reply(conn, failed, command).await;
        }
        payments::set_totals(conn, payment.id, next, amount, 0).await?;
        // In the capture's transaction: the invoice's number is taken only if it commits.
        invoice::issue_for_capture(conn, &self.invoicing, &payment, amount, c.invoice.as_ref())
            .await?;
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
        let key = format!("void-{}", payment.id);
        let late = match Self::lost_call(conn, payment.id, &key, c.deadline).await? {
            Some(false) => return reply(conn, failing.expired(c.deadline), command).await,
            lost => lost.is_some(),
        };
        let next = match payment.status.next(Transition::Void) {
            Ok(next) => next,
            Err(e) => return reply(conn, failing.refused(e.to_string()), command).await,
        };
        let request = FollowUpRequest {
            reference: payment.provider_reference.clone().unwrap_or_default(),
            capture_reference: None,
            payment_method: payment.payment_method.clone(),
            amount: None,
            reason: None,
            idempotency_key: key,
            deadline: call_deadline(c.deadline, late),
        };
        if let Err(failed) = self
            .follow_up(conn, &payment, &failing, &request, command.id, late)
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
        let payment = match Self::locked(conn, &failing).await? {
            Ok(p) => p,
            Err(refusal) => return reply(conn, refusal, command).await,
        };
        if let Some(earlier) = refunds::get(conn, c.refund_id).await? {
            return Self::restate_refund(conn, &payment, &earlier, &failing, command).await;
        }
        let key = format!("refund-{}", c.refund_id);
        let late = match Self::lost_call(conn, payment.id, &key, c.deadline).await? {
            Some(false) => return reply(conn, failing.expired(c.deadline), command).await,
            lost => lost.is_some(),
        };
        let amount = match Amount::parse_in(c.amount, payment.currency) {
            Ok(amount) => amount.minor(),
            Err(e) => return reply(conn, failing.refused(format!("amount: {e}")), command).await,
        };
        // Refunds still pending at the provider count against what is left; the payment's
        // state moves when the money does.
        let pending = refunds::pending_total(conn, payment.id).await?;
        let next = refund::refund(payment.captured, payment.refunded + pending, amount)
            .and_then(|_| refund::refund(payment.captured, payment.refunded, amount))
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
            capture_reference: attempts::capture_reference(conn, payment.id).await?,
            payment_method: payment.payment_method.clone(),
            amount: Some(Amount::parse(payment.money(amount)).expect("positive, known currency")),
            reason: Some(c.reason.clone()),
            idempotency_key: key,
            deadline: call_deadline(c.deadline, late),
        };
        let receipt = match self
            .follow_up(conn, &payment, &failing, &request, command.id, late)
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
        let mut made = NewRefund {
            id: c.refund_id,
            payment_id: payment.id,
            amount,
            currency: payment.currency.as_str(),
            reason: &c.reason,
            status: "succeeded",
            refunded_total: payment.refunded + amount,
            failure: None,
            provider_reference: Some(&receipt.reference),
            command: Some((command.id, command.correlation_id)),
        };
        if receipt.pending {
            // Answered when it ends (refunds::run_follow_up); a repeated command waits too.
            made.status = "pending";
            refunds::insert(conn, &made).await?;
            tracing::info!(refund_id = %c.refund_id, payment_id = %payment.id,
                reference = %receipt.reference, "the provider has the refund pending; following it up");
            return Ok(());
        }
        refunds::insert(conn, &made).await?;
        let event = refunded(
            conn,
            &self.invoicing,
            &payment,
            next,
            c.refund_id,
            amount,
            &c.reason,
        )
        .await?;
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
        if earlier.status == "pending" {
            // Its answer comes when the provider has made it, or given up.
            return Ok(());
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

    /// Calls the payment's provider for a capture, void or refund: records the attempt as
    /// started (committed; reused if an earlier delivery's answer was lost), calls, and
    /// records the answer. `Ok(Err(failed))`: the provider gave no usable answer; the state
    /// is unchanged. `late`: the call repeats one whose answer was lost, after the deadline;
    /// if it cannot be answered now, the command is retried rather than answered.
    async fn follow_up(
        &self,
        conn: &mut PgConnection,
        payment: &Payment,
        failing: &Failing,
        request: &FollowUpRequest,
        command_id: Uuid,
        late: bool,
    ) -> Result<Result<Receipt, PaymentFailed>, HandlerError> {
        let operation = match failing.operation {
            PaymentOperation::Capture => Operation::Capture,
            PaymentOperation::Void => Operation::Void,
            PaymentOperation::Refund => Operation::Refund,
            PaymentOperation::Authorize => unreachable!("authorizations are not follow-ups"),
        };
        let attempt_id =
            match attempts::unresolved(conn, payment.id, &request.idempotency_key).await? {
                Some(id) => id,
                None => {
                    let started = NewAttempt {
                        payment_id: payment.id,
                        operation,
                        amount: request.amount.map(Amount::minor),
                        idempotency_key: &request.idempotency_key,
                        outcome: Outcome::Started,
                        code: None,
                        detail: None,
                        provider_reference: None,
                        command_id: Some(command_id),
                    };
                    self.start_attempt(None, &started).await?.0
                }
            };
        let answer = match self.providers.get(&payment.provider) {
            None => Err(crate::provider::ProviderError::Unavailable(format!(
                "provider {} is not configured here",
                payment.provider
            ))),
            Some(provider) => match operation {
                Operation::Capture => provider.capture(request).await,
                Operation::Void => provider.void(request).await,
                _ => provider.refund(request).await,
            },
        };
        match answer {
            Ok(receipt) => {
                attempts::finish(
                    conn,
                    attempt_id,
                    Outcome::Succeeded,
                    None,
                    None,
                    Some(&receipt.reference),
                )
                .await?;
                Ok(Ok(receipt))
            }
            Err(e) if late && e.retryable() => Err(outcome_unknown(payment.id, &e)),
            Err(e) => {
                let detail = e.to_string();
                attempts::finish(conn, attempt_id, Outcome::Failed, None, Some(&detail), None)
                    .await?;
                payments::set_failure(conn, payment.id, &detail).await?;
                Ok(Err(failing.failed(e.retryable() && !late, late, detail)))
            }
        }
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
            "4242.4242.4242.4242",
            "4242_4242_4242_4242",
            "tok_4242424242424242",
            "pm_card_4000056655665556_x",
            "378282246310005",
            "  4242-4242 4242.4242  ",
        ] {
            assert!(is_card_number(pan), "{pan}");
        }
        for token in [
            "pm_card_visa",
            "tok_visa",
            "pm_card_threeDSecure2Required",
            "12345",
            "",
            // 16 digits that fail Luhn: not a card number.
            "4242424242424241",
            // Digits split by letters are separate runs.
            "pm_4242424a242424242",
        ] {
            assert!(!is_card_number(token), "{token}");
        }
    }
}
