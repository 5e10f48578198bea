//! The delivery worker: after the consumer's transaction commits, it claims due deliveries,
//! hands each to its channel (mail, SMS, push, webhook), and records the outcome — sent, another
//! attempt after a backoff (the kit's [`Backoff`]), or failed after the last attempt or a
//! permanent error. Woken by `NOTIFY` at commit, and polls as a fallback.
//!
//! Delivery to the channel is at least once: a worker that dies between handing a message
//! over and recording it leaves the lease to expire, and the message is sent again.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lettre::message::Mailbox;
use sqlx::{PgPool, postgres::PgListener};
use tienda_kit::{
    Shutdown,
    resilience::{Admission, Backoff},
    trace_context::{Kind, Span},
};

use crate::{
    channel::{self, Mailer, SendError, Transport},
    deliveries::{self, Claimed},
};

/// The CircuitPolicy target of the mail server.
pub const SMTP_TARGET: &str = "smtp";

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop: mark it failed.
    GiveUp,
}

/// Retry rules.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Pause between attempts.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// What follows failed attempt number `attempts` (1-based), drawn with `fraction` of the
    /// jittered backoff.
    pub fn after_failure(&self, attempts: u32, permanent: bool, fraction: f64) -> NextStep {
        if permanent || attempts >= self.max_attempts {
            NextStep::GiveUp
        } else {
            NextStep::RetryAfter(self.backoff.delay_with(attempts, fraction))
        }
    }
}

/// The worker's parts.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The database.
    pub db: PgPool,
    /// Where mail goes.
    pub mailer: Arc<Mailer>,
    /// Where webhooks go.
    pub webhooks: crate::webhooks::WebhookSender,
    /// Where texts go.
    pub sms: Arc<channel::sms::SmsSender>,
    /// Where push notifications go.
    pub push: Arc<channel::push::PushSender>,
    /// The CircuitPolicies in force (`{kind: External, name: smtp}` guards the mail server).
    pub policies: Arc<tienda_kit::policy::Policies>,
    /// The `From` of every message.
    pub from: Mailbox,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Fallback poll interval.
    pub poll: Duration,
    /// Messages in flight at once.
    pub concurrency: usize,
    /// How long one claimed attempt may run before another worker may take it over: the
    /// delay before a message a crashed process was sending is sent by another (or by it,
    /// restarted). Longer than any send may take (SMTP answers within 30 s).
    pub lease: Duration,
}

impl Worker {
    /// Sends until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let mut listener = match PgListener::connect_with(&self.db).await {
            Ok(mut l) => match l.listen(deliveries::QUEUED_CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN; polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; polling only");
                None
            }
        };
        loop {
            if shutdown.is_triggered() {
                return;
            }
            // Only what runs at once: a claimed message waits for no other before its lease runs.
            let batch = i64::try_from(self.concurrency.max(1)).unwrap_or(8);
            let claimed = match deliveries::claim(&self.db, batch, self.lease).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming deliveries failed");
                    Vec::new()
                }
            };
            let full = claimed.len() as i64 == batch;
            futures::stream::iter(claimed)
                .for_each_concurrent(self.concurrency.max(1), |delivery| self.attempt(delivery))
                .await;
            if full {
                continue;
            }
            let woken = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(e) = l.recv().await {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            tokio::time::sleep(self.poll).await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(self.poll) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    /// Hands `message` to the mail transport under the `smtp` CircuitPolicy's breaker, when
    /// one is in force: while it is open nothing is tried and the delivery waits, without
    /// using an attempt, for as long as the breaker says. (SMTP is not HTTP, so the kit's
    /// outbound client cannot carry it; its breaker can.)
    async fn mail(&self, message: &lettre::Message) -> Result<String, SendError> {
        let breaker = self
            .policies
            .current()
            .externals
            .get(SMTP_TARGET)
            .and_then(|c| c.breaker.clone());
        let Some(breaker) = breaker else {
            return self.mailer.send(message).await;
        };
        let admission = breaker.admit(std::time::Instant::now());
        if let Admission::Refused(wait) = admission {
            return Err(SendError::Throttled(
                wait,
                format!(
                    "the circuit to {SMTP_TARGET} is open (CircuitPolicy); trying again in {} ms",
                    wait.as_millis()
                ),
            ));
        }
        let result = self.mailer.send(message).await;
        // A refusal of this one message (a bad address) says nothing about the server.
        let healthy = !matches!(result, Err(SendError::Transient(_)));
        breaker.record(admission, healthy, std::time::Instant::now());
        result
    }

    /// One attempt at one delivery, and its outcome recorded.
    async fn attempt(&self, delivery: Claimed) {
        // The attempt is a client span of the trace that queued the delivery.
        let mut span = Span::start(
            format!("deliver {}", delivery.channel),
            Kind::Client,
            delivery.trace,
        );
        if span.is_recording() {
            span.set("tienda.delivery.id", delivery.outgoing.id.to_string());
            span.set("tienda.delivery.channel", delivery.channel.clone());
            span.set("tienda.delivery.attempt", i64::from(delivery.attempts));
        }
        let context = span.context();
        context.scope(self.attempt_in(delivery, &mut span)).await;
    }

    async fn attempt_in(&self, delivery: Claimed, span: &mut Span) {
        let id = delivery.outgoing.id;
        let result = match delivery.channel.as_str() {
            crate::webhooks::CHANNEL => {
                self.webhooks
                    .send(id, &delivery.outgoing.to, &delivery.outgoing.text)
                    .await
            }
            "sms" => {
                self.sms
                    .send(id, &delivery.outgoing.to, &delivery.outgoing.text)
                    .await
            }
            "push" => {
                self.push
                    .send(
                        id,
                        &delivery.outgoing.to,
                        &delivery.outgoing.subject,
                        &delivery.outgoing.text,
                    )
                    .await
            }
            _ => match channel::compose(&self.from, &delivery.outgoing) {
                Ok(message) => self.mail(&message).await,
                Err(e) => Err(e),
            },
        };
        match &result {
            Ok(provider_ref) => span.set("tienda.delivery.reference", provider_ref.clone()),
            Err(error) => span.fail(error.to_string()),
        }
        let recorded = match result {
            Ok(provider_ref) => {
                tracing::info!(delivery = %id, to = %delivery.outgoing.to, via = %provider_ref, "sent");
                deliveries::sent(&self.db, id, &provider_ref).await
            }
            Err(SendError::Throttled(delay, message)) => {
                tracing::warn!(delivery = %id, %message, "the receiver asks to wait");
                deliveries::throttled(&self.db, id, delivery.attempts, delay, &message).await
            }
            Err(error) => {
                let permanent = matches!(error, SendError::Permanent(_));
                let message = error.to_string();
                match self
                    .retry
                    .after_failure(delivery.attempts, permanent, fastrand::f64())
                {
                    NextStep::RetryAfter(delay) => {
                        tracing::warn!(delivery = %id, attempts = delivery.attempts, error = %message,
                            retry_in_ms = delay.as_millis() as u64, "sending failed; will retry");
                        deliveries::retry(&self.db, id, delivery.attempts, delay, &message).await
                    }
                    NextStep::GiveUp => {
                        tracing::error!(delivery = %id, attempts = delivery.attempts, error = %message,
                            "sending failed; giving up");
                        deliveries::failed(&self.db, id, delivery.attempts, &message).await
                    }
                }
            }
        };
        if let Err(e) = recorded {
            // The lease expires and the delivery is attempted again.
            tracing::error!(delivery = %id, error = %e, "recording a delivery's outcome failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::new(100 * MS, 1000 * MS),
        }
    }

    #[test]
    fn a_transient_failure_is_retried_with_a_growing_backoff() {
        assert_eq!(
            policy().after_failure(1, false, 0.5),
            NextStep::RetryAfter(50 * MS)
        );
        assert_eq!(
            policy().after_failure(2, false, 0.5),
            NextStep::RetryAfter(100 * MS)
        );
    }

    #[test]
    fn the_last_attempt_or_a_permanent_failure_gives_up() {
        assert_eq!(policy().after_failure(3, false, 0.5), NextStep::GiveUp);
        assert_eq!(policy().after_failure(1, true, 0.5), NextStep::GiveUp);
    }
}
