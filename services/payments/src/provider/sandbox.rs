//! The built-in `sandbox` provider: no network, answers from Stripe's test PaymentMethod ids,
//! so the same tokens work against Stripe's test mode.
//!
//! | Payment method | Authorization |
//! |---|---|
//! | `pm_card_visa`, `pm_card_mastercard`, `pm_card_amex` | authorized |
//! | `pm_card_chargeDeclined` | declined, `card_declined` |
//! | `pm_card_chargeDeclinedInsufficientFunds` | declined, `insufficient_funds` |
//! | `pm_card_chargeDeclinedExpiredCard` | declined, `expired_card` |
//! | `pm_card_chargeDeclinedIncorrectCvc` | declined, `incorrect_cvc` |
//! | `pm_card_chargeDeclinedFraudulent` | declined, `fraudulent` |
//! | `pm_card_visa_chargeDeclinedLostCard` | declined, `lost_card` |
//! | `pm_card_visa_chargeDeclinedStolenCard` | declined, `stolen_card` |
//! | `pm_card_chargeDeclinedProcessingError` | declined, `processing_error` |
//! | `pm_card_threeDSecure2Required` | `requires_action`: the customer completes or abandons the challenge at the payment's action URL |
//! | `pm_card_sandbox_slow` (ours, not Stripe's) | authorized after the configured delay (default 3 s), or unavailable if the command's deadline comes first — for watching deadlines and progress acks |
//! | `pm_card_sandbox_refundPending` (ours) | authorized; its refunds stay `pending` for the slow card's delay, then succeed |
//! | `pm_card_sandbox_refundFails` (ours) | authorized; its refunds are `pending`, then fail (`expired_or_canceled_card`) |
//! | `pm_card_us`, `pm_card_gb`, `pm_card_es`, `pm_card_de`, `pm_card_fr`, `pm_card_br`, `pm_card_mx`, `pm_card_jp` | authorized; a card issued in that country (the others are US cards, as Stripe's are) |
//! | anything else | refused: no such PaymentMethod |
//!
//! Fingerprints, for the fraud rules: `pm_card_sandbox_shared` (ours) is one card whoever pays
//! with it, so a card passed between customers can be tried; every other test card is a card
//! of the paying customer's own, so many test customers paying with `pm_card_visa` are not
//! taken for one stolen card.
//!
//! Captures, voids and other refunds succeed at once. Like Stripe, the sandbox remembers idempotency keys:
//! a repeat gets the first answer, and a key reused with other parameters is refused.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use uuid::Uuid;

use super::{
    AuthorizeOutcome, AuthorizeRequest, CardFacts, FollowUpRequest, Provider, ProviderError,
    ProviderResult, Receipt, RefundState,
};

/// The sandbox's name on payments and in CircuitPolicy targets.
pub const NAME: &str = "sandbox";

/// The test card that answers slowly.
pub const SLOW_CARD: &str = "pm_card_sandbox_slow";

/// The test card whose refunds are pending for a while, then succeed.
pub const REFUND_PENDING_CARD: &str = "pm_card_sandbox_refundPending";

/// The test card whose refunds are pending, then fail.
pub const REFUND_FAILS_CARD: &str = "pm_card_sandbox_refundFails";

/// The test card that is one card whoever pays with it.
pub const SHARED_CARD: &str = "pm_card_sandbox_shared";

/// Refund references of the two cards above (the sandbox keeps no state: the reference
/// says how the refund ends, and its UUIDv7 when it was made).
const PENDING_REFUND: &str = "re_sandbox_pending_";
const FAILING_REFUND: &str = "re_sandbox_failing_";

/// Keys remembered before the memory is cleared (a sandbox, not a ledger).
const MAX_KEYS: usize = 100_000;

/// What a test card does when authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeed,
    Decline(&'static str, &'static str),
    Challenge,
    Slow,
}

const CARDS: &[(&str, Behaviour)] = &[
    ("pm_card_visa", Behaviour::Succeed),
    ("pm_card_mastercard", Behaviour::Succeed),
    ("pm_card_amex", Behaviour::Succeed),
    (
        "pm_card_chargeDeclined",
        Behaviour::Decline("card_declined", "Your card was declined."),
    ),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        Behaviour::Decline("insufficient_funds", "Your card has insufficient funds."),
    ),
    (
        "pm_card_chargeDeclinedExpiredCard",
        Behaviour::Decline("expired_card", "Your card has expired."),
    ),
    (
        "pm_card_chargeDeclinedIncorrectCvc",
        Behaviour::Decline("incorrect_cvc", "Your card's security code is incorrect."),
    ),
    (
        "pm_card_chargeDeclinedFraudulent",
        Behaviour::Decline("fraudulent", "Your card was declined."),
    ),
    (
        "pm_card_visa_chargeDeclinedLostCard",
        Behaviour::Decline("lost_card", "Your card was declined."),
    ),
    (
        "pm_card_visa_chargeDeclinedStolenCard",
        Behaviour::Decline("stolen_card", "Your card was declined."),
    ),
    (
        "pm_card_chargeDeclinedProcessingError",
        Behaviour::Decline(
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
    ("pm_card_threeDSecure2Required", Behaviour::Challenge),
    (SLOW_CARD, Behaviour::Slow),
    (REFUND_PENDING_CARD, Behaviour::Succeed),
    (REFUND_FAILS_CARD, Behaviour::Succeed),
    (SHARED_CARD, Behaviour::Succeed),
    ("pm_card_us", Behaviour::Succeed),
    ("pm_card_gb", Behaviour::Succeed),
    ("pm_card_es", Behaviour::Succeed),
    ("pm_card_de", Behaviour::Succeed),
    ("pm_card_fr", Behaviour::Succeed),
    ("pm_card_br", Behaviour::Succeed),
    ("pm_card_mx", Behaviour::Succeed),
    ("pm_card_jp", Behaviour::Succeed),
];

/// What the sandbox says of a test card: a fingerprint of the token (and of the customer,
/// but for the shared card), and the country its name gives (`pm_card_es`), else the US.
fn card_facts(token: &str, customer: &str) -> Option<CardFacts> {
    CARDS.iter().find(|(t, _)| *t == token)?;
    let owner = if token == SHARED_CARD { "" } else { customer };
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{token}\n{owner}").as_bytes(),
    );
    let fingerprint: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let country = token
        .strip_prefix("pm_card_")
        .filter(|c| c.len() == 2)
        .map_or_else(|| "US".to_owned(), str::to_ascii_uppercase);
    Some(CardFacts {
        fingerprint: format!("sandbox_{fingerprint}"),
        country: Some(country),
    })
}

/// An answer kept under its idempotency key, with the parameters it answered.
#[derive(Debug, Clone)]
enum Remembered {
    Authorize(AuthorizeOutcome),
    Receipt(Receipt),
}

/// The sandbox provider.
#[derive(Debug, Clone)]
pub struct Sandbox {
    slow: Duration,
    keys: Arc<Mutex<HashMap<String, (String, Remembered)>>>,
}

impl Sandbox {
    /// A sandbox whose slow card takes `slow`.
    pub fn new(slow: Duration) -> Self {
        Self {
            slow,
            keys: Arc::default(),
        }
    }

    /// The answer already given under `key`, or an error if the key came with other
    /// parameters (`fingerprint`).
    fn remembered(&self, key: &str, fingerprint: &str) -> ProviderResult<Option<Remembered>> {
        let keys = self
            .keys
            .lock()
            .expect("never poisoned: no panics while held");
        match keys.get(key) {
            Some((seen, answer)) if seen == fingerprint => Ok(Some(answer.clone())),
            Some(_) => Err(ProviderError::Rejected(format!(
                "idempotency key {key} was used with other parameters"
            ))),
            None => Ok(None),
        }
    }

    fn remember(&self, key: &str, fingerprint: String, answer: Remembered) {
        let mut keys = self
            .keys
            .lock()
            .expect("never poisoned: no panics while held");
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.entry(key.to_owned()).or_insert((fingerprint, answer));
    }

    async fn authorize_now(&self, request: &AuthorizeRequest) -> ProviderResult<AuthorizeOutcome> {
        let fingerprint = format!(
            "authorize:{}:{}:{}",
            request.amount, request.payment_method, request.payment_id
        );
        if let Some(Remembered::Authorize(answer)) =
            self.remembered(&request.idempotency_key, &fingerprint)?
        {
            return Ok(answer);
        }
        let behaviour = CARDS
            .iter()
            .find(|(token, _)| *token == request.payment_method)
            .map(|(_, b)| *b)
            // Never echo the payment method: a card number sent as a token would end up in
            // attempts, failures and logs.
            .ok_or_else(|| ProviderError::Rejected("No such PaymentMethod".to_owned()))?;
        let reference = format!("pi_sandbox_{}", Uuid::now_v7().simple());
        let outcome = match behaviour {
            Behaviour::Succeed => AuthorizeOutcome::Authorized { reference },
            Behaviour::Challenge => AuthorizeOutcome::RequiresAction { reference },
            Behaviour::Decline(code, message) => AuthorizeOutcome::Declined {
                reference,
                code: code.to_owned(),
                message: message.to_owned(),
            },
            Behaviour::Slow => {
                // As the outbound client would: no answer past the caller's deadline.
                let left = (request.deadline - Utc::now()).to_std().unwrap_or_default();
                if left < self.slow {
                    tokio::time::sleep(left).await;
                    return Err(ProviderError::Unavailable(format!(
                        "no answer from {NAME} before the deadline"
                    )));
                }
                tokio::time::sleep(self.slow).await;
                AuthorizeOutcome::Authorized { reference }
            }
        };
        self.remember(
            &request.idempotency_key,
            fingerprint,
            Remembered::Authorize(outcome.clone()),
        );
        Ok(outcome)
    }

    fn follow_up(&self, operation: &str, request: &FollowUpRequest) -> ProviderResult<Receipt> {
        let fingerprint = format!(
            "{operation}:{}:{:?}",
            request.reference,
            request.amount.map(|a| a.to_string())
        );
        if let Some(Remembered::Receipt(receipt)) =
            self.remembered(&request.idempotency_key, &fingerprint)?
        {
            return Ok(receipt);
        }
        if !request.reference.starts_with("pi_sandbox_") {
            return Err(ProviderError::Rejected(format!(
                "No such PaymentIntent: '{}'",
                request.reference
            )));
        }
        let id = Uuid::now_v7().simple();
        let receipt = match (operation, request.payment_method.as_str()) {
            ("refund", REFUND_PENDING_CARD) => Receipt::pending(format!("{PENDING_REFUND}{id}")),
            ("refund", REFUND_FAILS_CARD) => Receipt::pending(format!("{FAILING_REFUND}{id}")),
            ("refund", _) => Receipt::done(format!("re_sandbox_{id}")),
            _ => Receipt::done(request.reference.clone()),
        };
        self.remember(
            &request.idempotency_key,
            fingerprint,
            Remembered::Receipt(receipt.clone()),
        );
        Ok(receipt)
    }
}

impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, ProviderResult<AuthorizeOutcome>> {
        self.authorize_now(request).boxed()
    }

    fn capture<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        futures::future::ready(self.follow_up("capture", request)).boxed()
    }

    fn void<'a>(&'a self, request: &'a FollowUpRequest) -> BoxFuture<'a, ProviderResult<Receipt>> {
        futures::future::ready(self.follow_up("void", request)).boxed()
    }

    fn refund<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>> {
        futures::future::ready(self.follow_up("refund", request)).boxed()
    }

    fn describe<'a>(
        &'a self,
        payment_method: &'a str,
        customer: &'a str,
        _deadline: chrono::DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Option<CardFacts>>> {
        futures::future::ready(Ok(card_facts(payment_method, customer))).boxed()
    }

    fn refund_status<'a>(
        &'a self,
        reference: &'a str,
        _deadline: chrono::DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<RefundState>> {
        futures::future::ready(self.refund_state(reference)).boxed()
    }
}

impl Sandbox {
    fn refund_state(&self, reference: &str) -> ProviderResult<RefundState> {
        let made = |id: &str| {
            Uuid::try_parse(id)
                .ok()
                .and_then(|id| id.get_timestamp())
                .map(|t| {
                    let (secs, nanos) = t.to_unix();
                    std::time::UNIX_EPOCH + Duration::new(secs, nanos)
                })
        };
        if let Some(id) = reference.strip_prefix(PENDING_REFUND) {
            let made = made(id).ok_or_else(|| no_such_refund(reference))?;
            let age = std::time::SystemTime::now()
                .duration_since(made)
                .unwrap_or_default();
            return Ok(if age < self.slow {
                RefundState::Pending
            } else {
                RefundState::Succeeded
            });
        }
        if let Some(id) = reference.strip_prefix(FAILING_REFUND) {
            made(id).ok_or_else(|| no_such_refund(reference))?;
            return Ok(RefundState::Failed {
                reason: "expired_or_canceled_card".into(),
            });
        }
        match reference.strip_prefix("re_sandbox_").map(Uuid::try_parse) {
            Some(Ok(_)) => Ok(RefundState::Succeeded),
            _ => Err(no_such_refund(reference)),
        }
    }
}

fn no_such_refund(reference: &str) -> ProviderError {
    ProviderError::Rejected(format!("No such refund: '{reference}'"))
}

#[cfg(test)]
mod tests {
    use tienda_events::money::Money;

    use super::*;
    use crate::domain::money::Amount;

    fn request(card: &str, key: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            payment_id: Uuid::now_v7(),
            amount: Amount::parse(Money {
                amount: 1999,
                currency: "EUR".parse().unwrap(),
            })
            .unwrap(),
            payment_method: card.to_owned(),
            idempotency_key: key.to_owned(),
            deadline: Utc::now() + chrono::Duration::minutes(1),
        }
    }

    #[tokio::test]
    async fn test_cards_answer_as_stripe_documents_them() {
        let sandbox = Sandbox::new(Duration::from_millis(1));
        let visa = sandbox.authorize(&request("pm_card_visa", "a")).await;
        assert!(matches!(visa, Ok(AuthorizeOutcome::Authorized { .. })));
        for (card, expected) in [
            ("pm_card_chargeDeclined", "card_declined"),
            (
                "pm_card_chargeDeclinedInsufficientFunds",
                "insufficient_funds",
            ),
            ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ] {
            match sandbox.authorize(&request(card, card)).await {
                Ok(AuthorizeOutcome::Declined { code, .. }) => assert_eq!(code, expected),
                other => panic!("{card}: {other:?}"),
            }
        }
        let challenge = sandbox
            .authorize(&request("pm_card_threeDSecure2Required", "c"))
            .await;
        assert!(matches!(
            challenge,
            Ok(AuthorizeOutcome::RequiresAction { .. })
        ));
        let unknown = sandbox
            .authorize(&request("pm_nope_4000056655665556", "d"))
            .await;
        match unknown {
            Err(ProviderError::Rejected(detail)) => {
                assert!(
                    !detail.contains("pm_nope"),
                    "the method is not echoed: {detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_repeated_key_gets_the_first_answer_and_other_parameters_are_refused() {
        let sandbox = Sandbox::new(Duration::from_millis(1));
        let first = request("pm_card_visa", "key-1");
        let a = sandbox.authorize(&first).await.unwrap();
        let b = sandbox.authorize(&first).await.unwrap();
        assert_eq!(a, b, "same reference, nothing authorized twice");
        let other = request("pm_card_visa", "key-1");
        assert!(matches!(
            sandbox.authorize(&other).await,
            Err(ProviderError::Rejected(_))
        ));
    }

    #[tokio::test]
    async fn the_slow_card_is_unavailable_when_the_deadline_comes_first() {
        let sandbox = Sandbox::new(Duration::from_secs(3600));
        let mut slow = request(SLOW_CARD, "s");
        slow.deadline = Utc::now();
        assert!(matches!(
            sandbox.authorize(&slow).await,
            Err(ProviderError::Unavailable(_))
        ));
    }
}
