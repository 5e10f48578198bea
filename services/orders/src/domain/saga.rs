//! The checkout saga's decisions, pure: given where an order is and what just happened (a
//! reply from inventory or payments, or a step's deadline passing), what to do next.
//!
//! The saga is orchestrated by orders: reserve stock → authorize the payment → commit the
//! reservation → confirm (only once inventory says `committed`). On failure or on a deadline
//! it compensates in reverse (void the payment, release the stock) and cancels with a reason
//! the customer can read; compensations are re-sent until they are answered. A reply that
//! finds the order already cancelled is answered by compensation (a late `reserved` by a
//! release, a late `authorized` by a void), never by resurrecting the order; a reply the
//! order is already past (a duplicate) changes nothing.
//!
//! Payment deadlines stay below the reservation's expiry ([`payment_deadline`]), so a payment
//! is never authorized for stock that is no longer held; if the stock is gone anyway
//! (`released` in answer to the commit), the payment is voided and the order cancelled.

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
    /// The payment is authorized; waiting for inventory to commit the stock (the commit is
    /// re-sent at each deadline until it is answered).
    Committing,
    /// The order is cancelled; compensations are sent and re-sent until answered.
    Compensating,
    /// The order is confirmed; nothing left to wait for.
    Completed,
    /// The order is cancelled and every compensation is answered.
    Compensated,
}

impl Step {
    /// Whether the step has a deadline the sweeper watches.
    pub fn is_waiting(self) -> bool {
        !matches!(self, Step::Completed | Step::Compensated)
    }
}

/// What happened, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Inventory holds every line until `expires_at`.
    Reserved {
        /// When inventory releases it unless committed.
        expires_at: DateTime<Utc>,
    },
    /// Inventory could not hold these SKUs.
    ReservationFailed {
        /// The SKUs that were short.
        skus: Vec<String>,
    },
    /// The customer must complete a challenge at `action_url` until `until`.
    PaymentActionRequired {
        /// When the challenge is abandoned.
        until: DateTime<Utc>,
        /// Where the customer completes it.
        action_url: String,
    },
    /// The payment is authorized.
    Authorized,
    /// The payment method was refused.
    Declined {
        /// Payments' sentence for the customer.
        message: String,
    },
    /// Authorizing failed; `retryable`: the same command may succeed if sent again.
    AuthorizationFailed {
        /// Provider unavailable (true) or refused/expired (false).
        retryable: bool,
    },
    /// Inventory sold the reserved stock.
    Committed,
    /// Inventory gave the stock back (on request, or because the reservation expired).
    Released,
    /// Payments released the authorization.
    Voided,
    /// Payments could not void; `settled`: it never will and nothing is held (no such
    /// payment, or one that was never authorized), otherwise the void is sent again.
    VoidFailed {
        /// Nothing to void.
        settled: bool,
    },
    /// Inventory put the order's sold stock back on the shelf.
    Restocked,
    /// The current step's deadline passed without an answer.
    DeadlinePassed,
    /// The time to retry a retryable authorization failure came.
    RetryDue,
}

/// A compensating command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compensation {
    /// `tienda.inventory.cmd.release`.
    Release,
    /// `tienda.payment.cmd.void`.
    Void,
    /// `tienda.inventory.cmd.restock`: stock sold for an order that was then cancelled.
    Restock,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stock is held until `reservation_expires_at`: send `payment.cmd.authorize`.
    Authorize {
        /// When the reservation expires (the payment deadline stays below it).
        reservation_expires_at: DateTime<Utc>,
    },
    /// A retryable failure: send the same authorization again later (before the deadline).
    ScheduleAuthorizeRetry,
    /// Send the same authorization (same `payment_id`) again.
    RetryAuthorize,
    /// Wait for the customer's challenge.
    AwaitAction {
        /// The challenge's expiry (capped below the reservation's).
        until: DateTime<Utc>,
        /// Where the customer completes it.
        action_url: String,
    },
    /// Authorized: send `inventory.cmd.commit`, wait for `committed`.
    Commit,
    /// The commit is unanswered: send it again.
    ResendCommit,
    /// Inventory committed: the order is confirmed.
    Confirm,
    /// Cancel the order and compensate what may be held.
    Cancel {
        /// The reason code.
        reason: CancelReason,
        /// The reason in a sentence the customer can read.
        detail: String,
        /// Whether to send `inventory.cmd.release`.
        release: bool,
        /// Whether to send `payment.cmd.void`.
        void: bool,
        /// Whether to send `inventory.cmd.restock` (the stock was sold and never left).
        restock: bool,
    },
    /// A late reply to a cancelled order: undo what it did, leave the order as it is.
    Compensate(Compensation),
    /// A compensation was answered.
    Settled(Compensation),
    /// Compensations are unanswered: send them again.
    ResendCompensations,
    /// A duplicate, or a reply the order is past: nothing changes.
    Ignore,
}

impl Decision {
    /// The state transitions the decision makes, in order.
    pub fn transitions(&self) -> &'static [Transition] {
        match self {
            Decision::Authorize { .. } => &[Transition::Reserve],
            Decision::AwaitAction { .. } => &[Transition::RequireAction],
            Decision::Commit => &[Transition::Authorize],
            Decision::Confirm => &[Transition::Confirm],
            Decision::Cancel { .. } => &[Transition::Cancel],
            _ => &[],
        }
    }
}

/// The deadline of a payment step that would end at `wanted`: never later than `margin`
/// before the reservation expires, so an authorization always leaves time to commit.
pub fn payment_deadline(
    wanted: DateTime<Utc>,
    reservation_expires_at: Option<DateTime<Utc>>,
    margin: chrono::Duration,
) -> DateTime<Utc> {
    match reservation_expires_at {
        Some(expires) => wanted.min(expires - margin),
        None => wanted,
    }
}

/// The saga's answer to `reply` for an order in `status`.
pub fn decide(status: Status, reply: &Reply) -> Decision {
    use Status::*;
    let awaiting_payment = matches!(status, Reserved | AwaitingPaymentAction);
    match reply {
        Reply::Reserved { expires_at } => match status {
            Pending => Decision::Authorize {
                reservation_expires_at: *expires_at,
            },
            Cancelled => Decision::Compensate(Compensation::Release),
            _ => Decision::Ignore,
        },
        Reply::ReservationFailed { skus } if status == Pending => Decision::Cancel {
            reason: CancelReason::OutOfStock,
            detail: format!("Not enough stock of {}.", skus.join(", ")),
            release: false,
            void: false,
            restock: false,
        },
        Reply::PaymentActionRequired { until, action_url } if status == Reserved => {
            Decision::AwaitAction {
                until: *until,
                action_url: action_url.clone(),
            }
        }
        Reply::Authorized if awaiting_payment => Decision::Commit,
        Reply::Authorized if status == Cancelled => Decision::Compensate(Compensation::Void),
        Reply::Declined { message } if awaiting_payment => Decision::Cancel {
            reason: CancelReason::PaymentDeclined,
            detail: format!("The payment was declined: {message}"),
            release: true,
            void: false,
            restock: false,
        },
        Reply::AuthorizationFailed { retryable: true } if awaiting_payment => {
            Decision::ScheduleAuthorizeRetry
        }
        Reply::AuthorizationFailed { retryable: false } if awaiting_payment => Decision::Cancel {
            reason: CancelReason::PaymentFailed,
            detail: "The payment could not be made; nothing was charged.".into(),
            release: true,
            void: false,
            restock: false,
        },
        Reply::RetryDue if awaiting_payment => Decision::RetryAuthorize,
        Reply::Committed if status == Authorized => Decision::Confirm,
        // Sold after the order was cancelled (the commit was in flight): put it back.
        Reply::Committed if status == Cancelled => Decision::Compensate(Compensation::Restock),
        Reply::Restocked if status == Cancelled => Decision::Settled(Compensation::Restock),
        // The stock is gone (the reservation expired) while the payment was pending or held.
        Reply::Released if awaiting_payment || status == Authorized => Decision::Cancel {
            reason: CancelReason::TimedOut,
            detail: "The stock could not be held until the payment was made; the payment was \
                     released and nothing was charged."
                .into(),
            release: false,
            void: true,
            restock: false,
        },
        Reply::Released if status == Cancelled => Decision::Settled(Compensation::Release),
        Reply::Voided if status == Cancelled => Decision::Settled(Compensation::Void),
        Reply::VoidFailed { settled: true } if status == Cancelled => {
            Decision::Settled(Compensation::Void)
        }
        Reply::DeadlinePassed => match status {
            Pending => Decision::Cancel {
                reason: CancelReason::TimedOut,
                detail: "Stock could not be reserved in time; nothing was charged.".into(),
                // Nothing is known to be held: a late `reserved` is released when it comes,
                // and the reservation's TTL backs that up.
                release: false,
                void: false,
                restock: false,
            },
            Reserved | AwaitingPaymentAction => Decision::Cancel {
                reason: CancelReason::TimedOut,
                detail: "The payment was not authorized in time; nothing was charged.".into(),
                release: true,
                // An authorization may be in flight or held: void it now rather than wait
                // for a late `authorized` (payments refuses a void of nothing harmlessly).
                void: true,
                restock: false,
            },
            // A commit cannot be undone blindly: ask again until inventory answers.
            Authorized => Decision::ResendCommit,
            Cancelled => Decision::ResendCompensations,
            _ => Decision::Ignore,
        },
        _ => Decision::Ignore,
    }
}

/// Who asks to cancel an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The customer who placed it; `within_window`: the cancellation window has not passed.
    Owner {
        /// Whether the cancellation window is still open.
        within_window: bool,
    },
    /// An admin: any time before delivery.
    Admin,
}

/// Why a cancellation request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRefused {
    /// The order's state does not allow it (for a customer: shipped or later).
    Illegal(super::status::IllegalTransition),
    /// The customer's cancellation window has passed.
    WindowPassed,
}

/// The saga's answer to a request to cancel an order in `status`: a [`Decision::Cancel`]
/// that compensates what the saga holds in that state, or why not.
///
/// - `pending`: nothing is known to be held (a late `reserved` is released when it comes).
/// - `reserved`, `awaiting_payment_action`: release the stock; void the payment (an
///   authorization may be in flight or held).
/// - `authorized`: the stock is being committed; the payment is voided (a commit that lands
///   after the cancellation is answered by a restock).
/// - `confirmed`: the payment is voided and the sold stock, which never left, restocked.
/// - `shipped` (admins only): the goods are out and the payment is captured at shipping:
///   what was captured is refunded (outside this table, by [`crate::aftersale`]).
///
/// A customer may cancel only while the order is not shipped and within the window; an admin
/// any time before delivery (the state machine's rule).
pub fn cancel_requested(status: Status, requester: Requester) -> Result<Decision, CancelRefused> {
    use Status::*;
    let illegal = || {
        CancelRefused::Illegal(super::status::IllegalTransition {
            from: status,
            transition: Transition::Cancel,
        })
    };
    status
        .apply(Transition::Cancel)
        .map_err(CancelRefused::Illegal)?;
    let (reason, detail) = match requester {
        Requester::Owner { within_window } => {
            if status == Shipped {
                return Err(illegal());
            }
            if !within_window {
                return Err(CancelRefused::WindowPassed);
            }
            (
                CancelReason::CustomerRequested,
                "Cancelled at your request; nothing was charged.",
            )
        }
        Requester::Admin if status == Shipped => (
            CancelReason::AdminRequested,
            "Cancelled by the shop after shipping; what was charged is refunded.",
        ),
        Requester::Admin => (
            CancelReason::AdminRequested,
            "Cancelled by the shop; nothing was charged.",
        ),
    };
    let (release, void, restock) = match status {
        Pending => (false, false, false),
        Reserved | AwaitingPaymentAction => (true, true, false),
        Authorized => (false, true, false),
        Confirmed => (false, true, true),
        _ => (false, false, false),
    };
    Ok(Decision::Cancel {
        reason,
        detail: detail.into(),
        release,
        void,
        restock,
    })
}

#[cfg(test)]
mod tests {
    use super::{Status::*, *};

    fn cancel_of(decision: &Decision) -> Option<(CancelReason, bool, bool)> {
        match decision {
            Decision::Cancel {
                reason,
                release,
                void,
                ..
            } => Some((*reason, *release, *void)),
            _ => None,
        }
    }

    fn reserved() -> Reply {
        Reply::Reserved {
            expires_at: Utc::now(),
        }
    }

    fn all_replies() -> Vec<Reply> {
        vec![
            reserved(),
            Reply::ReservationFailed {
                skus: vec!["A".into()],
            },
            Reply::PaymentActionRequired {
                until: Utc::now(),
                action_url: "https://pay/x".into(),
            },
            Reply::Authorized,
            Reply::Declined {
                message: "no".into(),
            },
            Reply::AuthorizationFailed { retryable: true },
            Reply::AuthorizationFailed { retryable: false },
            Reply::Committed,
            Reply::Released,
            Reply::Voided,
            Reply::VoidFailed { settled: true },
            Reply::VoidFailed { settled: false },
            Reply::Restocked,
            Reply::DeadlinePassed,
            Reply::RetryDue,
        ]
    }

    #[test]
    fn an_order_is_confirmed_only_after_inventory_commits() {
        assert!(matches!(
            decide(Pending, &reserved()),
            Decision::Authorize { .. }
        ));
        assert_eq!(decide(Reserved, &Reply::Authorized), Decision::Commit);
        assert_eq!(
            decide(AwaitingPaymentAction, &Reply::Authorized),
            Decision::Commit
        );
        assert_eq!(Decision::Commit.transitions(), [Transition::Authorize]);
        assert_eq!(decide(Authorized, &Reply::Committed), Decision::Confirm);
        for status in Status::ALL {
            if status != Authorized {
                assert_ne!(decide(status, &Reply::Committed), Decision::Confirm);
            }
        }
    }

    #[test]
    fn every_decision_s_transitions_are_legal_from_the_state_it_was_made_in() {
        for status in Status::ALL {
            for reply in &all_replies() {
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
    fn out_of_stock_cancels_naming_the_skus_and_compensates_nothing() {
        let decision = decide(
            Pending,
            &Reply::ReservationFailed {
                skus: vec!["MUG-1".into(), "PEN-2".into()],
            },
        );
        assert_eq!(
            cancel_of(&decision),
            Some((CancelReason::OutOfStock, false, false))
        );
        let Decision::Cancel { detail, .. } = decision else {
            unreachable!()
        };
        assert!(detail.contains("MUG-1, PEN-2"), "{detail}");
    }

    #[test]
    fn a_declined_or_refused_payment_releases_the_stock_and_cancels() {
        for status in [Reserved, AwaitingPaymentAction] {
            let declined = decide(
                status,
                &Reply::Declined {
                    message: "x".into(),
                },
            );
            assert_eq!(
                cancel_of(&declined),
                Some((CancelReason::PaymentDeclined, true, false))
            );
            let failed = decide(status, &Reply::AuthorizationFailed { retryable: false });
            assert_eq!(
                cancel_of(&failed),
                Some((CancelReason::PaymentFailed, true, false))
            );
        }
    }

    #[test]
    fn a_retryable_authorization_failure_is_retried_not_cancelled() {
        for status in [Reserved, AwaitingPaymentAction] {
            assert_eq!(
                decide(status, &Reply::AuthorizationFailed { retryable: true }),
                Decision::ScheduleAuthorizeRetry
            );
            assert_eq!(decide(status, &Reply::RetryDue), Decision::RetryAuthorize);
        }
        assert_eq!(decide(Cancelled, &Reply::RetryDue), Decision::Ignore);
        assert_eq!(decide(Authorized, &Reply::RetryDue), Decision::Ignore);
    }

    #[test]
    fn a_payment_deadline_voids_proactively_and_releases() {
        assert_eq!(
            cancel_of(&decide(Pending, &Reply::DeadlinePassed)),
            Some((CancelReason::TimedOut, false, false))
        );
        for status in [Reserved, AwaitingPaymentAction] {
            assert_eq!(
                cancel_of(&decide(status, &Reply::DeadlinePassed)),
                Some((CancelReason::TimedOut, true, true))
            );
        }
        assert_eq!(decide(Confirmed, &Reply::DeadlinePassed), Decision::Ignore);
    }

    #[test]
    fn an_unanswered_commit_or_compensation_is_sent_again_never_given_up() {
        assert_eq!(
            decide(Authorized, &Reply::DeadlinePassed),
            Decision::ResendCommit
        );
        assert_eq!(
            decide(Cancelled, &Reply::DeadlinePassed),
            Decision::ResendCompensations
        );
    }

    #[test]
    fn stock_released_before_the_commit_voids_the_payment_and_cancels() {
        for status in [Reserved, AwaitingPaymentAction, Authorized] {
            assert_eq!(
                cancel_of(&decide(status, &Reply::Released)),
                Some((CancelReason::TimedOut, false, true)),
                "{status}"
            );
        }
    }

    #[test]
    fn answers_to_compensations_settle_them() {
        assert_eq!(
            decide(Cancelled, &Reply::Released),
            Decision::Settled(Compensation::Release)
        );
        assert_eq!(
            decide(Cancelled, &Reply::Voided),
            Decision::Settled(Compensation::Void)
        );
        assert_eq!(
            decide(Cancelled, &Reply::VoidFailed { settled: true }),
            Decision::Settled(Compensation::Void)
        );
        assert_eq!(
            decide(Cancelled, &Reply::VoidFailed { settled: false }),
            Decision::Ignore,
            "re-sent at the next deadline"
        );
    }

    #[test]
    fn a_challenge_never_outlives_the_reservation() {
        let now = Utc::now();
        let expires = now + chrono::Duration::seconds(900);
        let margin = chrono::Duration::seconds(60);
        let challenge = now + chrono::Duration::seconds(900);
        assert_eq!(
            payment_deadline(challenge, Some(expires), margin),
            expires - margin
        );
        let short = now + chrono::Duration::seconds(60);
        assert_eq!(payment_deadline(short, Some(expires), margin), short);
        assert_eq!(payment_deadline(challenge, None, margin), challenge);
    }

    #[test]
    fn late_replies_to_a_cancelled_order_are_compensated_not_resurrected() {
        assert_eq!(
            decide(Cancelled, &reserved()),
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
            Reply::AuthorizationFailed { retryable: false },
            Reply::ReservationFailed { skus: vec![] },
        ] {
            assert_eq!(decide(Cancelled, &reply), Decision::Ignore, "{reply:?}");
        }
        assert_eq!(
            decide(Cancelled, &Reply::Committed),
            Decision::Compensate(Compensation::Restock),
            "sold after the cancellation: put back"
        );
        assert_eq!(
            decide(Cancelled, &Reply::Restocked),
            Decision::Settled(Compensation::Restock)
        );
        for status in Status::ALL {
            if status != Cancelled {
                assert_eq!(decide(status, &Reply::Restocked), Decision::Ignore);
            }
        }
    }

    #[test]
    fn duplicate_replies_change_nothing() {
        assert_eq!(decide(Reserved, &reserved()), Decision::Ignore);
        assert_eq!(decide(Confirmed, &reserved()), Decision::Ignore);
        assert_eq!(decide(Authorized, &Reply::Authorized), Decision::Ignore);
        assert_eq!(decide(Confirmed, &Reply::Authorized), Decision::Ignore);
        assert_eq!(decide(Confirmed, &Reply::Committed), Decision::Ignore);
        assert_eq!(
            decide(
                AwaitingPaymentAction,
                &Reply::PaymentActionRequired {
                    until: Utc::now(),
                    action_url: "u".into()
                }
            ),
            Decision::Ignore
        );
    }

    #[test]
    fn only_settled_sagas_stop_waiting() {
        assert!(Step::Committing.is_waiting() && Step::Compensating.is_waiting());
        assert!(!Step::Completed.is_waiting() && !Step::Compensated.is_waiting());
    }

    #[test]
    fn a_customer_cancels_before_shipping_within_the_window_compensating_what_is_held() {
        let owner = Requester::Owner {
            within_window: true,
        };
        let expected = [
            (Pending, false, false),
            (Reserved, true, true),
            (AwaitingPaymentAction, true, true),
            (Authorized, false, true),
            (Confirmed, false, true),
        ];
        for (status, release, void) in expected {
            assert_eq!(
                cancel_of(&cancel_requested(status, owner).unwrap()),
                Some((CancelReason::CustomerRequested, release, void)),
                "{status}"
            );
        }
        for status in [Shipped, Delivered, Cancelled, Refunded] {
            assert!(
                matches!(
                    cancel_requested(status, owner),
                    Err(CancelRefused::Illegal(_))
                ),
                "{status}"
            );
        }
        assert_eq!(
            cancel_requested(
                Confirmed,
                Requester::Owner {
                    within_window: false
                }
            ),
            Err(CancelRefused::WindowPassed)
        );
    }

    #[test]
    fn an_admin_cancels_any_time_before_delivery() {
        for status in Status::ALL {
            let result = cancel_requested(status, Requester::Admin);
            let allowed = !matches!(status, Delivered | Cancelled | Refunded);
            assert_eq!(result.is_ok(), allowed, "{status}");
            if let Ok(decision) = result {
                assert_eq!(
                    cancel_of(&decision).map(|c| c.0),
                    Some(CancelReason::AdminRequested)
                );
                assert_eq!(decision.transitions(), [Transition::Cancel]);
            }
        }
        assert_eq!(
            cancel_of(&cancel_requested(Shipped, Requester::Admin).unwrap()),
            Some((CancelReason::AdminRequested, false, false)),
            "captured at shipping: refunded, not voided"
        );
    }

    #[test]
    fn only_a_cancelled_confirmed_order_restocks_what_it_sold() {
        for status in Status::ALL {
            let Ok(Decision::Cancel { restock, .. }) = cancel_requested(status, Requester::Admin)
            else {
                continue;
            };
            assert_eq!(restock, status == Confirmed, "{status}");
        }
    }
}
