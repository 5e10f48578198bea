//! Order events (orders): what happened to an order, for notifications and analytics. The
//! order's own event log is richer and stays inside orders; these are the business facts
//! other components act on (`tienda.order.<event>`).
//!
//! Every event names the order, the customer (absent for a guest) and the address to write to,
//! so a consumer never has to call orders back to act on it. Nothing here grants access: no
//! tokens, no card data.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{contract, money::Money};

/// One line of an order as placed: the price the customer accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Stock keeping unit.
    pub sku: String,
    /// The product's name when the order was placed (the catalog may change later).
    pub name: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
}

/// Why an order was cancelled, in words a customer can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Some line could not be reserved.
    OutOfStock,
    /// The payment was declined.
    PaymentDeclined,
    /// The payment could not be made (provider down, challenge abandoned).
    PaymentFailed,
    /// A saga step did not answer before its deadline.
    TimedOut,
    /// The customer cancelled it.
    CustomerRequested,
    /// An admin cancelled it.
    AdminRequested,
}

/// A customer placed an order; the saga (reserve, authorize, confirm) starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// What was ordered.
    pub items: Vec<OrderLine>,
    /// What the customer pays.
    pub total: Money,
}
contract!(Event, OrderPlaced, "order", "placed", 1, |m| m.order_id);

/// Stock is committed and the payment authorized: the order will be fulfilled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// What was ordered.
    pub items: Vec<OrderLine>,
    /// What the customer pays.
    pub total: Money,
    /// The payment that pays for it.
    pub payment_id: Uuid,
}
contract!(Event, OrderConfirmed, "order", "confirmed", 1, |m| m
    .order_id);

/// The order will not be fulfilled; whatever the saga had done is undone (stock released,
/// payment voided or refunded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// Why, as a code.
    pub reason: CancelReason,
    /// Why, in a sentence a customer can read (e.g. which lines were out of stock).
    pub detail: String,
}
contract!(Event, OrderCancelled, "order", "cancelled", 1, |m| m
    .order_id);

/// The order left the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// Who carries it.
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
}
contract!(Event, OrderShipped, "order", "shipped", 1, |m| m.order_id);

/// The order reached the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderDelivered {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// When it was delivered.
    pub delivered_at: DateTime<Utc>,
}
contract!(Event, OrderDelivered, "order", "delivered", 1, |m| m
    .order_id);

/// Money went back to the customer for the order (a return, or a cancellation after capture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRefunded {
    /// The order.
    pub order_id: Uuid,
    /// The customer, absent for a guest checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Where to write to about it.
    pub email: String,
    /// This refund.
    pub amount: Money,
    /// Everything refunded for the order so far, this refund included.
    pub refunded_total: Money,
    /// Whether the whole order is now refunded.
    pub full: bool,
}
contract!(Event, OrderRefunded, "order", "refunded", 1, |m| m.order_id);
