//! The order state machine as a pure transition table.
//!
//! ```text
//! pending ─reserve→ reserved ─require_action→ awaiting_payment_action
//!                      │                            │
//!                      └──────────authorize─────────┘→ authorized ─confirm→ confirmed
//! confirmed ─ship→ shipped ─deliver→ delivered
//! any state before delivered ─cancel→ cancelled
//! confirmed | shipped | delivered ─refund→ refunded
//! ```
//!
//! A transition the table does not hold is an [`IllegalTransition`]: handlers answer it with
//! a 409 problem, the saga treats it as a late or duplicate reply. Nothing here does I/O.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an order is. Stored and sent as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Status {
    /// Placed; stock not yet reserved.
    Pending,
    /// Stock held; the payment is being authorized.
    Reserved,
    /// The customer must complete a payment challenge (3-D Secure).
    AwaitingPaymentAction,
    /// The payment is authorized; inventory is committing the stock (confirmed once it has).
    Authorized,
    /// Stock committed and payment authorized: it will be fulfilled.
    Confirmed,
    /// Left the warehouse.
    Shipped,
    /// Reached the customer.
    Delivered,
    /// Will not be fulfilled; what the saga did is undone.
    Cancelled,
    /// Money went back to the customer after confirmation.
    Refunded,
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Inventory reserved every line.
    Reserve,
    /// The payment needs the customer's action.
    RequireAction,
    /// The payment was authorized.
    Authorize,
    /// Stock committed: the order is confirmed.
    Confirm,
    /// Handed to a carrier.
    Ship,
    /// Delivered.
    Deliver,
    /// Cancelled (by the saga, the customer or an admin).
    Cancel,
    /// Refunded.
    Refund,
}

/// A transition the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot {transition}")]
pub struct IllegalTransition {
    /// The state the order is in.
    pub from: Status,
    /// What was asked.
    pub transition: Transition,
}

impl Status {
    /// Every state, for tables and tests.
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Reserved,
        Status::AwaitingPaymentAction,
        Status::Authorized,
        Status::Confirmed,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
        Status::Refunded,
    ];

    /// The state after `transition`, or why it is not allowed.
    pub fn apply(self, transition: Transition) -> Result<Status, IllegalTransition> {
        use Status::*;
        use Transition::*;
        let next = match (self, transition) {
            (Pending, Reserve) => Reserved,
            (Reserved, RequireAction) => AwaitingPaymentAction,
            (Reserved | AwaitingPaymentAction, Authorize) => Authorized,
            (Authorized, Confirm) => Confirmed,
            (Confirmed, Ship) => Shipped,
            (Shipped, Deliver) => Delivered,
            (
                Pending | Reserved | AwaitingPaymentAction | Authorized | Confirmed | Shipped,
                Cancel,
            ) => Cancelled,
            (Confirmed | Shipped | Delivered, Refund) => Refunded,
            (from, transition) => return Err(IllegalTransition { from, transition }),
        };
        Ok(next)
    }

    /// Whether nothing more happens to the order on its own (the saga is over).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Cancelled | Status::Refunded
        )
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Reserved => "reserved",
            Status::AwaitingPaymentAction => "awaiting_payment_action",
            Status::Authorized => "authorized",
            Status::Confirmed => "confirmed",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
            Status::Refunded => "refunded",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transition::Reserve => "be reserved",
            Transition::RequireAction => "await a payment action",
            Transition::Authorize => "be authorized",
            Transition::Confirm => "be confirmed",
            Transition::Ship => "be shipped",
            Transition::Deliver => "be delivered",
            Transition::Cancel => "be cancelled",
            Transition::Refund => "be refunded",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Status::*, Transition::*, *};

    #[test]
    fn the_happy_path_runs_from_pending_to_delivered() {
        let mut status = Pending;
        for step in [Reserve, Authorize, Confirm, Ship, Deliver] {
            status = status.apply(step).unwrap();
        }
        assert_eq!(status, Delivered);
    }

    #[test]
    fn a_payment_challenge_sits_between_reserved_and_authorized() {
        let status = Reserved.apply(RequireAction).unwrap();
        assert_eq!(status, AwaitingPaymentAction);
        assert_eq!(status.apply(Authorize), Ok(Authorized));
    }

    #[test]
    fn every_state_before_delivery_can_be_cancelled_and_none_after() {
        for from in Status::ALL {
            let allowed = from.apply(Cancel).is_ok();
            let expected = !matches!(from, Delivered | Cancelled | Refunded);
            assert_eq!(allowed, expected, "cancel from {from}");
        }
    }

    #[test]
    fn a_cancelled_order_is_never_resurrected() {
        for step in [
            Reserve,
            RequireAction,
            Authorize,
            Confirm,
            Ship,
            Deliver,
            Cancel,
            Refund,
        ] {
            assert_eq!(
                Cancelled.apply(step),
                Err(IllegalTransition {
                    from: Cancelled,
                    transition: step
                })
            );
        }
    }

    #[test]
    fn steps_cannot_be_skipped_or_repeated() {
        assert!(Pending.apply(Authorize).is_err());
        assert!(Pending.apply(Confirm).is_err());
        assert!(Reserved.apply(Reserve).is_err());
        assert!(Reserved.apply(Confirm).is_err());
        assert!(Confirmed.apply(Authorize).is_err());
        assert!(Pending.apply(Ship).is_err());
        assert!(Shipped.apply(Ship).is_err());
    }

    #[test]
    fn only_confirmed_shipped_or_delivered_orders_are_refunded() {
        let refundable: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| s.apply(Refund).is_ok())
            .collect();
        assert_eq!(refundable, vec![Confirmed, Shipped, Delivered]);
    }

    #[test]
    fn names_are_the_lower_case_wire_names() {
        for status in Status::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
        }
        assert_eq!(
            IllegalTransition {
                from: Cancelled,
                transition: Confirm
            }
            .to_string(),
            "an order that is cancelled cannot be confirmed"
        );
    }
}
