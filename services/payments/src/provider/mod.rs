//! Payment providers behind one trait: authorize, capture, void, refund, each with the
//! idempotency key the provider must honour (a repeat with the same key is answered with the
//! first result and moves no money twice).
//!
//! Built in: [`sandbox`] (no network, Stripe's test PaymentMethod ids) and [`stripe`]
//! (PaymentIntents over Stripe's REST API) and [`paypal`] (Orders v2). A network provider
//! holds the service's
//! [`tienda_kit::outbound::Outbound`] and sends every request with
//! `outbound.call_until(Target::External("stripe"), request, Some(deadline))`, the deadline
//! being the command's, with the key in `Idempotency-Key` (Stripe) or `PayPal-Request-Id`, so
//! a CircuitPolicy on `{kind: External, name: stripe}` applies live and the kit's retries are
//! safe; an open circuit or a timeout maps to [`ProviderError::Unavailable`].

pub mod paypal;
pub mod sandbox;
pub mod stripe;

use std::{collections::BTreeMap, fmt, sync::Arc};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::domain::money::Amount;

/// Ask to hold `amount` on a payment method.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Ours (metadata at the provider).
    pub payment_id: Uuid,
    /// What to hold.
    pub amount: Amount,
    /// The provider's token for the payment method.
    pub payment_method: String,
    /// Sent as the provider's idempotency key.
    pub idempotency_key: String,
    /// The provider must answer before this (the command's deadline).
    pub deadline: DateTime<Utc>,
}

/// Ask to move held money: capture, void or refund an earlier authorization.
#[derive(Debug, Clone)]
pub struct FollowUpRequest {
    /// The provider's id of the authorization (a PaymentIntent id).
    pub reference: String,
    /// How much (captures and refunds; `None` for a void).
    pub amount: Option<Amount>,
    /// Why (refunds).
    pub reason: Option<String>,
    /// The provider's id of the capture being refunded (refunds; PayPal refunds a capture,
    /// Stripe the PaymentIntent).
    pub capture_reference: Option<String>,
    /// The payment method the authorization was made with (the sandbox's test cards decide
    /// how their refunds end).
    pub payment_method: String,
    /// Sent as the provider's idempotency key.
    pub idempotency_key: String,
    /// The provider must answer before this.
    pub deadline: DateTime<Utc>,
}

/// How the provider answered an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// Held.
    Authorized {
        /// The provider's id of the authorization.
        reference: String,
    },
    /// The customer must pass a 3-D Secure challenge first.
    RequiresAction {
        /// The provider's id of the authorization.
        reference: String,
    },
    /// Refused.
    Declined {
        /// The provider's id of the attempt.
        reference: String,
        /// Stripe's decline code (`card_declined`, `insufficient_funds`, ...).
        code: String,
        /// A sentence for the customer.
        message: String,
    },
}

/// The provider's record of a capture, void or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the operation (the PaymentIntent for captures and voids, the
    /// refund for refunds).
    pub reference: String,
    /// The provider accepted a refund but has not made it yet (bank transfers, some card
    /// networks): it is followed up with [`Provider::refund_status`] until it ends.
    pub pending: bool,
}

impl Receipt {
    /// A finished operation.
    pub fn done(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            pending: false,
        }
    }

    /// A refund the provider has yet to make.
    pub fn pending(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            pending: true,
        }
    }
}

/// What the provider says of a card payment method, for the fraud rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFacts {
    /// The same for every token of one card number (Stripe's `card.fingerprint`).
    pub fingerprint: String,
    /// The issuer's country, ISO 3166-1 alpha-2 (`card.country`).
    pub country: Option<String>,
}

/// Where a refund is at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    /// The money went back.
    Succeeded,
    /// Not yet.
    Pending,
    /// It will not be made (the card was closed, the bank refused it): the money stays
    /// captured.
    Failed {
        /// The provider's reason (`expired_or_canceled_card`, `declined`, ...).
        reason: String,
    },
}

/// Where an authorization is at the provider now (asked when a webhook arrives or a customer
/// says a challenge is done: the provider's current state, never the message's, decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentState {
    /// Waiting for the customer's authentication.
    RequiresAction,
    /// Still being worked on at the provider.
    Processing,
    /// Held and capturable.
    Authorized,
    /// Captured (all or part); nothing more can be held.
    Captured,
    /// Refused, or authentication failed; nothing is held.
    Declined {
        /// Stripe's code (`card_declined`, `payment_intent_authentication_failure`).
        code: String,
        /// A sentence for the customer.
        message: String,
    },
    /// Released.
    Canceled,
}

/// An authorization as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Its state.
    pub state: IntentState,
    /// What the customer's browser needs to complete a challenge with the provider's own
    /// script (Stripe.js `handleNextAction`), while one is open.
    pub client_secret: Option<String>,
}

/// A provider call that produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Unreachable, timed out, circuit open, 5xx: the same call with the same key may work
    /// later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request itself (unknown payment method, bad state, key
    /// reused with other parameters): repeating it cannot help.
    #[error("provider refused the request: {0}")]
    Rejected(String),
}

impl ProviderError {
    /// Whether the same call may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(self, ProviderError::Unavailable(_))
    }
}

/// Result of a provider call.
pub type ProviderResult<T> = Result<T, ProviderError>;

/// One payment provider.
pub trait Provider: Send + Sync + fmt::Debug {
    /// Its name, stored on each payment and used in CircuitPolicy targets (`sandbox`).
    fn name(&self) -> &'static str;

    /// Holds the amount.
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, ProviderResult<AuthorizeOutcome>>;

    /// Captures (part of) an authorization; the rest is released.
    fn capture<'a>(
        &'a self,
        request: &'a FollowUpRequest,
    ) -> BoxFuture<'a, ProviderResult<Receipt>>;

    /// Releases an authorization.
    fn void<'a>(&'a self, request: &'a FollowUpRequest) -> BoxFuture<'a, ProviderResult<Receipt>>;

    /// Gives back (part of) a capture.
    fn refund<'a>(&'a self, request: &'a FollowUpRequest)
    -> BoxFuture<'a, ProviderResult<Receipt>>;

    /// Whether the provider keeps records of its own that reconciliation compares ours with
    /// (the sandbox does not).
    fn keeps_records(&self) -> bool {
        false
    }

    /// Whether the customer completes 3-D Secure with the provider (its script, its page)
    /// rather than on our challenge page: then only the provider's state, fetched with
    /// [`Provider::retrieve`], concludes a challenge.
    fn challenges_at_provider(&self) -> bool {
        false
    }

    /// What the provider says of `payment_method` when it is a card (`None`: not a card, or
    /// the provider tells nothing; the card rules then stay silent). `customer` (an account
    /// id or a guest's email) is for the sandbox, whose test cards are each customer's own.
    fn describe<'a>(
        &'a self,
        payment_method: &'a str,
        customer: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Option<CardFacts>>> {
        let _ = (payment_method, customer, deadline);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Where the refund `reference` (a [`Receipt`] that was pending) is now. Providers whose
    /// refunds are never pending refuse.
    fn refund_status<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<RefundState>> {
        let _ = (reference, deadline);
        Box::pin(std::future::ready(Err(ProviderError::Rejected(format!(
            "{} leaves no refund pending",
            self.name()
        )))))
    }

    /// The authorization `reference` as the provider has it now. Providers that keep no
    /// state of their own (the sandbox) refuse.
    fn retrieve<'a>(
        &'a self,
        reference: &'a str,
        deadline: DateTime<Utc>,
    ) -> BoxFuture<'a, ProviderResult<Intent>> {
        let _ = (reference, deadline);
        Box::pin(std::future::ready(Err(ProviderError::Rejected(format!(
            "{} keeps no state to retrieve",
            self.name()
        )))))
    }
}

/// The providers this process can use, by name, and the one new payments go to.
#[derive(Debug, Clone)]
pub struct Providers {
    by_name: BTreeMap<&'static str, Arc<dyn Provider>>,
    default: &'static str,
}

impl Providers {
    /// Providers with `default` for new payments.
    pub fn new(default: Arc<dyn Provider>) -> Self {
        let name = default.name();
        Self {
            by_name: BTreeMap::from([(name, default)]),
            default: name,
        }
    }

    /// Also `provider` (payments made with it can be followed up; new ones still go to the
    /// default).
    #[must_use]
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.by_name.entry(provider.name()).or_insert(provider);
        self
    }

    /// The provider new payments go to.
    pub fn default_provider(&self) -> Arc<dyn Provider> {
        self.by_name[self.default].clone()
    }

    /// The provider a payment was made with (`None`: not configured in this process).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.by_name.get(name).cloned()
    }
}

/// Sends a request built by a network provider through the outbound client under the
/// provider's CircuitPolicy, finished by `deadline`; the status and the body. No answer
/// (deadline passed, circuit open, transport error, body cut off) is
/// [`ProviderError::Unavailable`].
pub(crate) async fn send(
    outbound: &tienda_kit::outbound::Outbound,
    provider: &'static str,
    request: reqwest::RequestBuilder,
    deadline: DateTime<Utc>,
) -> ProviderResult<(reqwest::StatusCode, bytes::Bytes)> {
    let remaining = (deadline - Utc::now())
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    if remaining.is_zero() {
        return Err(ProviderError::Unavailable(format!(
            "the command's deadline passed before {provider} was called"
        )));
    }
    let request = request
        .build()
        .map_err(|e| ProviderError::Rejected(format!("building the request to {provider}: {e}")))?;
    let response = outbound
        .call_until(
            tienda_kit::outbound::Target::External(provider),
            request,
            Some(tienda_kit::resilience::deadline::Deadline::after(remaining)),
        )
        .await
        .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ProviderError::Unavailable(format!("reading {provider}'s answer: {e}")))?;
    Ok((status, body))
}
