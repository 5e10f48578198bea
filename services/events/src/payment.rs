//! The order saga's payment commands (`tienda.payment.cmd.<name>`, handled by payments) and
//! payments' replies and events (`tienda.payment.<event>`).
//!
//! Orders sends a command and waits for the reply with the same `payment_id` (`refund_id` for
//! refunds): `authorize` → `authorized`, `requires_action`, `declined` or `failed`; `capture`
//! → `captured` or `failed`; `void` → `voided` or `failed`; `refund` → `refunded` or `failed`.
//! Every command carries the order (also the envelope's correlation id) and a deadline: a
//! command handled after its deadline is answered `failed` with `expired: true` and changes
//! nothing, and a reply that reaches orders after the step timed out is answered by
//! compensation (void, refund), never by resurrecting the order. Commands are idempotent by
//! their id: a repeat answers with the outcome of the first.
//!
//! The payment method is a provider token (`pm_card_visa`); card numbers never enter a
//! message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{contract, money::Money};

/// Which command a `failed` reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentOperation {
    /// `tienda.payment.cmd.authorize`.
    Authorize,
    /// `tienda.payment.cmd.capture`.
    Capture,
    /// `tienda.payment.cmd.void`.
    Void,
    /// `tienda.payment.cmd.refund`.
    Refund,
}

/// Command: authorize `amount` on the customer's payment method for an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorizePayment {
    /// Chosen by orders; repeating it never authorizes twice.
    pub payment_id: Uuid,
    /// The order it pays for.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout (fraud rules count per customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// The customer's address (receipts, fraud rules).
    pub email: String,
    /// What to authorize.
    pub amount: Money,
    /// The provider's token for the payment method (`pm_card_visa`), never a card number.
    pub payment_method: String,
    /// The address the customer checked out from (fraud rules: cards tried from one address,
    /// country mismatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The country of the customer's billing address (the shipping address's when no billing
    /// address is asked), ISO 3166-1 alpha-2 (fraud rules: country mismatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_country: Option<String>,
    /// After this the command is answered `failed` (`expired`) and nothing is authorized.
    pub deadline: DateTime<Utc>,
}
contract!(Command, AuthorizePayment, "payment", "authorize", 1, |m| m
    .payment_id);

/// Command: capture an authorized payment, in full or in part (the rest is released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturePayment {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// How much; absent: the whole authorized amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// After this the command is answered `failed` (`expired`).
    pub deadline: DateTime<Utc>,
    /// What the capture pays for, printed on the invoice it issues (absent: one line for the
    /// amount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceDetails>,
}
contract!(Command, CapturePayment, "payment", "capture", 1, |m| m
    .payment_id);

/// Who is billed and for what: the invoice a capture issues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceDetails {
    /// The customer's name.
    pub customer_name: String,
    /// The billing address, one entry per printed line (street, city and postal code, ...).
    pub address: Vec<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The order's lines, at the prices charged (taxes included).
    pub lines: Vec<InvoiceLine>,
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// The variant.
    pub sku: String,
    /// What it is.
    pub description: String,
    /// Units.
    pub quantity: u32,
    /// The price of one unit, taxes included.
    pub unit_price: Money,
}

/// Command: release an authorization that will not be captured (compensation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoidPayment {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// After this the command is answered `failed` (`expired`).
    pub deadline: DateTime<Utc>,
}
contract!(Command, VoidPayment, "payment", "void", 1, |m| m.payment_id);

/// Command: give back part or all of a captured payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundPayment {
    /// Chosen by orders; repeating it never refunds twice.
    pub refund_id: Uuid,
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// How much; refunds of a payment never exceed what was captured.
    pub amount: Money,
    /// Why (shown to admins, sent to the provider).
    pub reason: String,
    /// After this the command is answered `failed` (`expired`).
    pub deadline: DateTime<Utc>,
}
contract!(Command, RefundPayment, "payment", "refund", 1, |m| m
    .payment_id);

/// The amount is held on the customer's payment method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// What is held.
    pub amount: Money,
    /// Which provider holds it (`sandbox`, `stripe`, `paypal`).
    pub provider: String,
}
contract!(Event, PaymentAuthorized, "payment", "authorized", 1, |m| m
    .payment_id);

/// The customer must act (3-D Secure) before the payment can be authorized; the answer comes
/// later as `authorized`, `declined` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequiresAction {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Where the customer completes the challenge.
    pub action_url: String,
    /// When an unanswered challenge is abandoned.
    pub expires_at: DateTime<Utc>,
}
contract!(
    Event,
    PaymentRequiresAction,
    "payment",
    "requires_action",
    1,
    |m| m.payment_id
);

/// The payment method was refused; nothing is held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The decline code, in Stripe's vocabulary (`card_declined`, `insufficient_funds`,
    /// `expired_card`, `fraud_blocked` for our own fraud rules, ...).
    pub code: String,
    /// A sentence the customer can be shown.
    pub message: String,
}
contract!(Event, PaymentDeclined, "payment", "declined", 1, |m| m
    .payment_id);

/// Money moved from the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// What was captured (the rest of the authorization, if any, is released).
    pub amount: Money,
}
contract!(Event, PaymentCaptured, "payment", "captured", 1, |m| m
    .payment_id);

/// The authorization was released; nothing was captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentVoided {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
}
contract!(Event, PaymentVoided, "payment", "voided", 1, |m| m
    .payment_id);

/// An admin rejected a payment the fraud rules held for review: the order is to be cancelled
/// (orders cancels it as an admin's cancellation, which voids or refunds the payment and puts
/// the stock back). Nothing about the payment changed yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReviewRejected {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Who rejected it (the admin's subject).
    pub reviewed_by: String,
    /// Their note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
contract!(
    Event,
    PaymentReviewRejected,
    "payment",
    "review_rejected",
    1,
    |m| m.payment_id
);

/// Money went back to the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// The refund.
    pub refund_id: Uuid,
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// This refund.
    pub amount: Money,
    /// Everything refunded of the payment so far, this refund included.
    pub refunded_total: Money,
}
contract!(Event, PaymentRefunded, "payment", "refunded", 1, |m| m
    .payment_id);

/// A command could not be carried out: the provider is unreachable or broke, the command came
/// after its deadline, or it makes no sense for the payment's state (capturing a voided one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    /// The payment.
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The refund, when a refund failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<Uuid>,
    /// Which command failed.
    pub operation: PaymentOperation,
    /// Whether sending the same command again may succeed (provider unavailable); false for
    /// an expired command or one the payment's state refuses.
    pub retryable: bool,
    /// The command arrived after its deadline and was not carried out.
    #[serde(default)]
    pub expired: bool,
    /// What happened, for logs and admins.
    pub detail: String,
}
contract!(Event, PaymentFailed, "payment", "failed", 1, |m| m
    .payment_id);
