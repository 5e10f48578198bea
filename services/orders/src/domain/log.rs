//! What the order event log records. Every change to an order is one appended entry; the
//! `orders` row is the projection of its entries, updated in the same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_events::{Money, order::CancelReason};
use uuid::Uuid;

use super::{
    checkout::{Address, PricedLine},
    saga::Compensation,
    status::Transition,
};

/// One entry of an order's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderEvent {
    /// The customer placed the order.
    Placed {
        /// The customer.
        customer_id: Option<Uuid>,
        /// Their address.
        email: String,
        /// Where it ships.
        shipping_address: Address,
        /// What it costs.
        total: Money,
        /// What was ordered, at the prices accepted (absent in entries written before it was
        /// recorded).
        #[serde(default)]
        lines: Vec<PlacedLine>,
        /// The lines' sum.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtotal: Option<Money>,
        /// The currency of every amount (ISO 4217).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
        /// The payment provider's token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_method: Option<String>,
        /// The Idempotency-Key it was placed with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkout_key: Option<String>,
        /// Checked out from the customer's cart (its lines go back there if the payment is
        /// refused).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_cart: bool,
        /// The address the customer checked out from (the gateway's `X-Real-IP`), for the
        /// payment's fraud rules.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_ip: Option<String>,
    },
    /// Inventory holds the stock.
    StockReserved {
        /// The reservation.
        reservation_id: Uuid,
        /// When inventory releases it unless committed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
    /// The customer must complete a payment challenge.
    PaymentActionRequired {
        /// Until when (the challenge's expiry, capped below the reservation's).
        until: DateTime<Utc>,
        /// Where the customer completes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_url: Option<String>,
    },
    /// The payment is authorized.
    PaymentAuthorized {
        /// The payment.
        payment_id: Uuid,
    },
    /// Stock committed: the order will be fulfilled.
    Confirmed,
    /// Handed to a carrier.
    Shipped {
        /// Who carries it.
        carrier: String,
        /// The carrier's tracking number.
        tracking_number: String,
    },
    /// Reached the customer.
    Delivered,
    /// The order will not be fulfilled.
    Cancelled {
        /// The code.
        reason: CancelReason,
        /// The sentence.
        detail: String,
    },
    /// A reply came after the order was cancelled and was undone.
    LateReplyCompensated {
        /// What was sent.
        compensation: Compensation,
    },
    /// Inventory confirmed the sale.
    StockCommitted,
    /// Inventory gave the stock back.
    StockReleased,
    /// Payments released the authorization.
    PaymentVoided,
    /// Inventory put the cancelled order's sold stock back on the shelf.
    StockRestocked,
    /// The payment was captured (at shipping): money moved.
    PaymentCaptured {
        /// What was captured.
        amount: Money,
    },
    /// The capture was refused for good (the authorization expired, say): an admin must act.
    CaptureFailed {
        /// Payments' account of it.
        detail: String,
    },
    /// A refund was asked of payments.
    RefundRequested {
        /// The refund (payments is idempotent by it).
        refund_id: Uuid,
        /// How much.
        amount: Money,
        /// Why.
        reason: String,
        /// The return it pays back, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_id: Option<Uuid>,
    },
    /// Money went back to the customer.
    Refunded {
        /// The refund.
        refund_id: Uuid,
        /// This refund.
        amount: Money,
        /// Everything refunded so far.
        refunded_total: Money,
        /// The whole order is refunded (the order becomes `refunded`).
        full: bool,
    },
    /// A refund was refused for good: an admin must act.
    RefundFailed {
        /// The refund.
        refund_id: Uuid,
        /// Payments' account of it.
        detail: String,
    },
    /// The customer asked to send goods back.
    ReturnRequested {
        /// The return.
        return_id: Uuid,
        /// What goes back.
        items: Vec<ReturnLine>,
        /// What it refunds: the lines at the prices paid.
        amount: Money,
        /// Why, in the customer's words.
        reason: String,
    },
    /// The returned goods arrived: they are restocked and refunded.
    ReturnReceived {
        /// The return.
        return_id: Uuid,
    },
    /// Inventory put a return's goods back on the shelf.
    ReturnRestocked {
        /// The return.
        return_id: Uuid,
    },
}

/// A returned quantity of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReturnLine {
    /// The variant.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// A line as the order log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedLine {
    /// The product.
    pub product_id: Uuid,
    /// The variant.
    pub sku: String,
    /// The product's name when ordered.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// One unit's price.
    pub unit_price: Money,
}

impl From<&PricedLine> for PlacedLine {
    fn from(l: &PricedLine) -> Self {
        Self {
            product_id: l.product_id,
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        }
    }
}

impl OrderEvent {
    /// What the entry does to the order's state: `None` for `placed` (which creates it,
    /// `pending`) and for entries that record what happened around the order without moving
    /// it (compensations and their answers, the stock's commit).
    pub fn transition(&self) -> Option<Transition> {
        match self {
            OrderEvent::StockReserved { .. } => Some(Transition::Reserve),
            OrderEvent::PaymentActionRequired { .. } => Some(Transition::RequireAction),
            OrderEvent::PaymentAuthorized { .. } => Some(Transition::Authorize),
            OrderEvent::Confirmed => Some(Transition::Confirm),
            OrderEvent::Shipped { .. } => Some(Transition::Ship),
            OrderEvent::Delivered => Some(Transition::Deliver),
            OrderEvent::Cancelled { .. } => Some(Transition::Cancel),
            OrderEvent::Placed { .. }
            | OrderEvent::LateReplyCompensated { .. }
            | OrderEvent::StockCommitted
            | OrderEvent::StockReleased
            | OrderEvent::PaymentVoided
            | OrderEvent::StockRestocked
            | OrderEvent::PaymentCaptured { .. }
            | OrderEvent::CaptureFailed { .. }
            | OrderEvent::RefundRequested { .. }
            | OrderEvent::RefundFailed { .. }
            | OrderEvent::ReturnRequested { .. }
            | OrderEvent::ReturnReceived { .. }
            | OrderEvent::ReturnRestocked { .. } => None,
            OrderEvent::Refunded { full, .. } => full.then_some(Transition::Refund),
        }
    }

    /// The entry's `type`, stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "placed",
            OrderEvent::StockReserved { .. } => "stock_reserved",
            OrderEvent::PaymentActionRequired { .. } => "payment_action_required",
            OrderEvent::PaymentAuthorized { .. } => "payment_authorized",
            OrderEvent::Confirmed => "confirmed",
            OrderEvent::Shipped { .. } => "shipped",
            OrderEvent::Delivered => "delivered",
            OrderEvent::Cancelled { .. } => "cancelled",
            OrderEvent::LateReplyCompensated { .. } => "late_reply_compensated",
            OrderEvent::StockCommitted => "stock_committed",
            OrderEvent::StockReleased => "stock_released",
            OrderEvent::PaymentVoided => "payment_voided",
            OrderEvent::StockRestocked => "stock_restocked",
            OrderEvent::PaymentCaptured { .. } => "payment_captured",
            OrderEvent::CaptureFailed { .. } => "capture_failed",
            OrderEvent::RefundRequested { .. } => "refund_requested",
            OrderEvent::Refunded { .. } => "refunded",
            OrderEvent::RefundFailed { .. } => "refund_failed",
            OrderEvent::ReturnRequested { .. } => "return_requested",
            OrderEvent::ReturnReceived { .. } => "return_received",
            OrderEvent::ReturnRestocked { .. } => "return_restocked",
        }
    }
}

#[cfg(test)]
mod placed_tests {
    use super::*;

    #[test]
    fn a_placed_entry_written_before_lines_were_recorded_still_reads() {
        let old = serde_json::json!({
            "type": "placed", "customer_id": null, "email": "a@b.es",
            "shipping_address": {"name": "A", "line1": "L", "city": "C", "postal_code": "1",
                                 "country": "ES"},
            "total": {"amount": 1, "currency": "EUR"}
        });
        let OrderEvent::Placed {
            lines, subtotal, ..
        } = serde_json::from_value(old).unwrap()
        else {
            panic!("not placed")
        };
        assert!(lines.is_empty() && subtotal.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaying_a_saga_s_entries_walks_the_state_machine_to_where_the_order_is() {
        use super::super::status::Status;
        let entries = [
            OrderEvent::StockReserved {
                reservation_id: Uuid::nil(),
                expires_at: None,
            },
            OrderEvent::PaymentActionRequired {
                until: Utc::now(),
                action_url: None,
            },
            OrderEvent::PaymentAuthorized {
                payment_id: Uuid::nil(),
            },
            OrderEvent::StockCommitted,
            OrderEvent::Confirmed,
        ];
        let status =
            entries
                .iter()
                .fold(Status::Pending, |status, entry| match entry.transition() {
                    Some(t) => status.apply(t).unwrap(),
                    None => status,
                });
        assert_eq!(status, Status::Confirmed);
        let after_cancel = [
            OrderEvent::Cancelled {
                reason: CancelReason::TimedOut,
                detail: "x".into(),
            },
            OrderEvent::LateReplyCompensated {
                compensation: Compensation::Void,
            },
            OrderEvent::PaymentVoided,
            OrderEvent::StockReleased,
        ]
        .iter()
        .fold(Status::Reserved, |status, entry| match entry.transition() {
            Some(t) => status.apply(t).unwrap(),
            None => status,
        });
        assert_eq!(after_cancel, Status::Cancelled);
    }

    #[test]
    fn the_stored_type_is_the_serialized_tag() {
        for event in [
            OrderEvent::Confirmed,
            OrderEvent::StockCommitted,
            OrderEvent::Shipped {
                carrier: "SEUR".into(),
                tracking_number: "X1".into(),
            },
            OrderEvent::Delivered,
            OrderEvent::Cancelled {
                reason: CancelReason::OutOfStock,
                detail: "x".into(),
            },
            OrderEvent::LateReplyCompensated {
                compensation: Compensation::Void,
            },
        ] {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.kind());
        }
    }
}
