//! Payment providers behind one trait: authorize, capture, void, refund, each with the
//! idempotency key the provider must honour (a repeat with the same key is answered with the
//! first result and moves no money twice).
//!
//! Built in: [`sandbox`] (no network, Stripe's test PaymentMethod ids). Stripe and PayPal are
//! not built yet. A network provider holds the service's
//! [`tienda_kit::outbound::Outbound`] and sends every request with
//! `outbound.call_until(Target::External("stripe"), request, Some(deadline))`, the deadline
//! being the command's, with the key in `Idempotency-Key` (Stripe) or `PayPal-Request-Id`, so
//! a CircuitPolicy on `{kind: External, name: stripe}` applies live and the kit's retries are
//! safe; an open circuit or a timeout maps to [`ProviderError::Unavailable`].

pub mod sandbox;

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

    /// The provider new payments go to.
    pub fn default_provider(&self) -> Arc<dyn Provider> {
        self.by_name[self.default].clone()
    }

    /// The provider a payment was made with (`None`: not configured in this process).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.by_name.get(name).cloned()
    }
}
