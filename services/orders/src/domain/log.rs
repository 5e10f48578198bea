//! What the order event log records. Every change to an order is one appended entry; the
//! `orders` row is the projection of its entries, updated in the same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_events::{Money, order::CancelReason};
use uuid::Uuid;

use super::{checkout::Address, saga::Compensation};

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
    },
    /// Inventory holds the stock.
    StockReserved {
        /// The reservation.
        reservation_id: Uuid,
    },
    /// The customer must complete a payment challenge.
    PaymentActionRequired {
        /// Until when.
        until: DateTime<Utc>,
    },
    /// The payment is authorized.
    PaymentAuthorized {
        /// The payment.
        payment_id: Uuid,
    },
    /// Stock committed: the order will be fulfilled.
    Confirmed,
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
}

impl OrderEvent {
    /// The entry's `type`, stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "placed",
            OrderEvent::StockReserved { .. } => "stock_reserved",
            OrderEvent::PaymentActionRequired { .. } => "payment_action_required",
            OrderEvent::PaymentAuthorized { .. } => "payment_authorized",
            OrderEvent::Confirmed => "confirmed",
            OrderEvent::Cancelled { .. } => "cancelled",
            OrderEvent::LateReplyCompensated { .. } => "late_reply_compensated",
            OrderEvent::StockCommitted => "stock_committed",
            OrderEvent::StockReleased => "stock_released",
            OrderEvent::PaymentVoided => "payment_voided",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_type_is_the_serialized_tag() {
        for event in [
            OrderEvent::Confirmed,
            OrderEvent::StockCommitted,
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
