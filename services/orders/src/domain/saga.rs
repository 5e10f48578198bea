//! The checkout saga's decisions, pure: given where an order is and what just happened (a
//! reply from inventory or payments, or a step's deadline passing), what to do next.
//!
//! The saga is orchestrated by orders: reserve stock → authorize the payment → confirm (commit
//! the reservation). On failure or on a deadline it compensates in reverse (release the stock)
//! and cancels with a reason the customer can read. A reply that finds the order already
//! cancelled is answered by compensation (a late `reserved` by a release, a late `authorized`
//! by a void), never by resurrecting the order; a reply the order is already past (a
//! duplicate) changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tienda_events::order::CancelReason;

use super::status::{Status, Transition};

/// Where the saga of an order is. Stored as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Step {
    /// Waiting for inventory to answer the reservation.
    Reserving,
    /// Waiting for payments to answer the authorization (or the customer's challenge).
    Authorizing,
    /// The order is confirmed; nothing left to wait for.
    Completed,
    /// The order is cancelled and its compensations are sent.
    Compensated,
}

impl Step {
    /// Whether the step has a deadline the sweeper watches.
    pub fn is_waiting(self) -> bool {
        matches!(self, Step::Reserving | Step::Authorizing)
    }
}

/// What happened, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Inventory holds every line.
    Reserved,
    /// Inventory could not hold these SKUs.
    ReservationFailed {
        /// The SKUs that were short.
        skus: Vec<String>,
    },
    /// The customer must complete a challenge until `until`.
    PaymentActionRequired {
        /// When the challenge is abandoned.
        until: DateTime<Utc>,
    },
    /// The payment is authorized.
    Authorized,
    /// The payment method was refused.
    Declined {
        /// Payments' sentence for the customer.
        message: String,
    },
    /// Authorizing failed (provider down, command expired).
    AuthorizationFailed,
    /// The current step's deadline passed without an answer.
    DeadlinePassed,
}

/// A compensating command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compensation {
    /// `tienda.inventory.cmd.release`.
    Release,
    /// `tienda.payment.cmd.void`.
    Void,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stock is held: send `payment.cmd.authorize`, wait for payments.
    Authorize,
    /// Wait for the customer's challenge until `until`.
    AwaitAction {
        /// The new deadline.
        until: DateTime<Utc>,
    },
    /// Authorized: send `inventory.cmd.commit`, confirm the order.
    Confirm,
    /// Cancel the order; `release` says whether stock is held and must be released.
    Cancel {
        /// The reason code.
        reason: CancelReason,
        /// The reason in a sentence the customer can read.
        detail: String,
        /// Whether to send `inventory.cmd.release`.
        release: bool,
    },
    /// A late reply to a cancelled order: undo what it did, leave the order as it is.
    Compensate(Compensation),
    /// A duplicate, or a reply the order is past: nothing changes.
    Ignore,
}

impl Decision {
    /// The state transitions the decision makes, in order.
    pub fn transitions(&self) -> &'static [Transition] {
        match self {
            Decision::Authorize => &[Transition::Reserve],
            Decision::AwaitAction { .. } => &[Transition::RequireAction],
            Decision::Confirm => &[Transition::Authorize, Transition::Confirm],
            Decision::Cancel { .. } => &[Transition::Cancel],
            Decision::Compensate(_) | Decision::Ignore => &[],
        }
    }

    /// The saga's step afterwards (`None`: unchanged).
    pub fn step(&self) -> Option<Step> {
        match self {
            Decision::Authorize | Decision::AwaitAction { .. } => Some(Step::Authorizing),
            Decision::Confirm => Some(Step::Completed),
            Decision::Cancel { .. } => Some(Step::Compensated),
            Decision::Compensate(_) | Decision::Ignore => None,
        }
    }
}

/// The saga's answer to `reply` for an order in `status`.
pub fn decide(status: Status, reply: &Reply) -> Decision {
    use Status::*;
    let awaiting_payment = matches!(status, Reserved | AwaitingPaymentAction);
    match reply {
        Reply::Reserved => match status {
            Pending => Decision::Authorize,
            Cancelled => Decision::Compensate(Compensation::Release),
            _ => Decision::Ignore,
        },
        Reply::ReservationFailed { skus } if status == Pending => Decision::Cancel {
            reason: CancelReason::OutOfStock,
            detail: format!("Not enough stock of {}.", skus.join(", ")),
            release: false,
        },
        Reply::PaymentActionRequired { until } if status == Reserved => {
            Decision::AwaitAction { until: *until }
        }
        Reply::Authorized if awaiting_payment => Decision::Confirm,
        Reply::Authorized if status == Cancelled => Decision::Compensate(Compensation::Void),
        Reply::Declined { message } if awaiting_payment => Decision::Cancel {
            reason: CancelReason::PaymentDeclined,
            detail: format!("The payment was declined: {message}"),
            release: true,
        },
        Reply::AuthorizationFailed if awaiting_payment => Decision::Cancel {
            reason: CancelReason::PaymentFailed,
            detail: "The payment could not be made; nothing was charged.".into(),
            release: true,
        },
        Reply::DeadlinePassed if status == Pending => Decision::Cancel {
            reason: CancelReason::TimedOut,
            detail: "Stock could not be reserved in time; nothing was charged.".into(),
            // Nothing is known to be held: a late `reserved` is released when it comes, and
            // the reservation's TTL backs that up.
            release: false,
        },
        Reply::DeadlinePassed if awaiting_payment => Decision::Cancel {
            reason: CancelReason::TimedOut,
            detail: "The payment was not authorized in time; nothing was charged.".into(),
            release: true,
        },
        _ => Decision::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::{Status::*, *};

    fn cancel_reason(decision: &Decision) -> Option<(CancelReason, bool)> {
        match decision {
            Decision::Cancel {
                reason, release, ..
            } => Some((*reason, *release)),
            _ => None,
        }
    }

    #[test]
    fn a_reserved_order_goes_on_to_authorize_then_confirm() {
        assert_eq!(decide(Pending, &Reply::Reserved), Decision::Authorize);
        assert_eq!(decide(Reserved, &Reply::Authorized), Decision::Confirm);
        assert_eq!(
            decide(AwaitingPaymentAction, &Reply::Authorized),
            Decision::Confirm
        );
    }

    #[test]
    fn every_decision_s_transitions_are_legal_from_the_state_it_was_made_in() {
        let replies = [
            Reply::Reserved,
            Reply::ReservationFailed {
                skus: vec!["A".into()],
            },
            Reply::PaymentActionRequired { until: Utc::now() },
            Reply::Authorized,
            Reply::Declined {
                message: "no".into(),
            },
            Reply::AuthorizationFailed,
            Reply::DeadlinePassed,
        ];
        for status in Status::ALL {
            for reply in &replies {
                let decision = decide(status, reply);
                let mut at = status;
                for t in decision.transitions() {
                    at = at
                        .apply(*t)
                        .unwrap_or_else(|e| panic!("{status} + {reply:?}: {e}"));
                }
            }
        }
    }

    #[test]
    fn out_of_stock_cancels_naming_the_skus_and_releases_nothing() {
        let decision = decide(
            Pending,
            &Reply::ReservationFailed {
                skus: vec!["MUG-1".into(), "PEN-2".into()],
            },
        );
        assert_eq!(
            cancel_reason(&decision),
            Some((CancelReason::OutOfStock, false))
        );
        let Decision::Cancel { detail, .. } = decision else {
            unreachable!()
        };
        assert!(detail.contains("MUG-1, PEN-2"), "{detail}");
    }

    #[test]
    fn a_declined_or_failed_payment_releases_the_stock_and_cancels() {
        for status in [Reserved, AwaitingPaymentAction] {
            let declined = decide(
                status,
                &Reply::Declined {
                    message: "x".into(),
                },
            );
            assert_eq!(
                cancel_reason(&declined),
                Some((CancelReason::PaymentDeclined, true))
            );
            let failed = decide(status, &Reply::AuthorizationFailed);
            assert_eq!(
                cancel_reason(&failed),
                Some((CancelReason::PaymentFailed, true))
            );
        }
    }

    #[test]
    fn a_deadline_cancels_as_timed_out_releasing_only_stock_known_to_be_held() {
        assert_eq!(
            cancel_reason(&decide(Pending, &Reply::DeadlinePassed)),
            Some((CancelReason::TimedOut, false))
        );
        assert_eq!(
            cancel_reason(&decide(Reserved, &Reply::DeadlinePassed)),
            Some((CancelReason::TimedOut, true))
        );
        assert_eq!(decide(Confirmed, &Reply::DeadlinePassed), Decision::Ignore);
    }

    #[test]
    fn late_replies_to_a_cancelled_order_are_compensated_not_resurrected() {
        assert_eq!(
            decide(Cancelled, &Reply::Reserved),
            Decision::Compensate(Compensation::Release)
        );
        assert_eq!(
            decide(Cancelled, &Reply::Authorized),
            Decision::Compensate(Compensation::Void)
        );
        for reply in [
            Reply::Declined {
                message: "x".into(),
            },
            Reply::AuthorizationFailed,
            Reply::DeadlinePassed,
            Reply::ReservationFailed { skus: vec![] },
        ] {
            assert_eq!(decide(Cancelled, &reply), Decision::Ignore, "{reply:?}");
        }
    }

    #[test]
    fn duplicate_replies_change_nothing() {
        assert_eq!(decide(Reserved, &Reply::Reserved), Decision::Ignore);
        assert_eq!(decide(Confirmed, &Reply::Reserved), Decision::Ignore);
        assert_eq!(decide(Confirmed, &Reply::Authorized), Decision::Ignore);
        assert_eq!(
            decide(
                AwaitingPaymentAction,
                &Reply::PaymentActionRequired { until: Utc::now() }
            ),
            Decision::Ignore
        );
    }

    #[test]
    fn steps_follow_decisions() {
        assert_eq!(Decision::Authorize.step(), Some(Step::Authorizing));
        assert_eq!(Decision::Confirm.step(), Some(Step::Completed));
        assert_eq!(Decision::Ignore.step(), None);
        assert!(Step::Reserving.is_waiting() && !Step::Completed.is_waiting());
    }
}
