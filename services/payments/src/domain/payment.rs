//! The payment state machine as one transition table ([`PaymentStatus::next`]), modelled on
//! Stripe's PaymentIntent: an authorization is held (`authorized`), possibly after the
//! customer's 3-D Secure challenge (`requires_action`), then captured in full or in part or
//! voided; what was captured can be refunded in parts until nothing is left.

use std::{fmt, str::FromStr};

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Recorded; the provider has not answered the authorization yet.
    Pending,
    /// The customer must complete a 3-D Secure challenge.
    RequiresAction,
    /// The amount is held on the payment method.
    Authorized,
    /// Part of the authorization was captured; the rest was released.
    PartiallyCaptured,
    /// The whole authorization was captured.
    Captured,
    /// Some of the captured amount went back to the customer.
    PartiallyRefunded,
    /// All of the captured amount went back (final).
    Refunded,
    /// The authorization was released without capture (final).
    Voided,
    /// The provider or the customer's bank refused, or the challenge was abandoned (final).
    Declined,
    /// The provider could not be reached or broke; nothing is held, authorizing again may work.
    Failed,
}

/// Everything that moves a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The provider holds the amount.
    AuthorizationSucceeded,
    /// The provider asks for a 3-D Secure challenge first.
    AuthorizationNeedsAction,
    /// The provider refused.
    AuthorizationDeclined,
    /// The provider could not answer.
    AuthorizationFailed,
    /// The customer passed the challenge.
    ChallengeCompleted,
    /// The customer failed or abandoned the challenge.
    ChallengeAbandoned,
    /// The whole authorization is captured.
    CaptureAll,
    /// Less than the authorization is captured; the rest is released.
    CapturePart,
    /// The authorization is released.
    Void,
    /// Part of what is left of the capture is refunded.
    RefundPart,
    /// Everything left of the capture is refunded.
    RefundRest,
}

/// A transition the payment's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a payment that is {from} cannot take {transition:?}")]
pub struct Illegal {
    /// The state.
    pub from: PaymentStatus,
    /// What was asked.
    pub transition: Transition,
}

impl PaymentStatus {
    /// Every state, for exhaustive tests and checks.
    pub const ALL: [PaymentStatus; 10] = [
        PaymentStatus::Pending,
        PaymentStatus::RequiresAction,
        PaymentStatus::Authorized,
        PaymentStatus::PartiallyCaptured,
        PaymentStatus::Captured,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Voided,
        PaymentStatus::Declined,
        PaymentStatus::Failed,
    ];

    /// The transition table: the state after `transition`, or why not.
    pub fn next(self, transition: Transition) -> Result<PaymentStatus, Illegal> {
        use PaymentStatus as S;
        use Transition as T;
        let next = match (self, transition) {
            (S::Pending | S::Failed, T::AuthorizationSucceeded) => S::Authorized,
            (S::Pending | S::Failed, T::AuthorizationNeedsAction) => S::RequiresAction,
            (S::Pending | S::Failed, T::AuthorizationDeclined) => S::Declined,
            (S::Pending | S::Failed, T::AuthorizationFailed) => S::Failed,
            (S::RequiresAction, T::ChallengeCompleted) => S::Authorized,
            (S::RequiresAction, T::ChallengeAbandoned) => S::Declined,
            (S::RequiresAction | S::Authorized, T::Void) => S::Voided,
            (S::Authorized, T::CaptureAll) => S::Captured,
            (S::Authorized, T::CapturePart) => S::PartiallyCaptured,
            (S::Captured | S::PartiallyCaptured | S::PartiallyRefunded, T::RefundPart) => {
                S::PartiallyRefunded
            }
            (S::Captured | S::PartiallyCaptured | S::PartiallyRefunded, T::RefundRest) => {
                S::Refunded
            }
            (from, transition) => return Err(Illegal { from, transition }),
        };
        Ok(next)
    }

    /// Whether money was captured (a repeated capture command is answered `captured`).
    pub fn is_captured(self) -> bool {
        matches!(
            self,
            PaymentStatus::Captured
                | PaymentStatus::PartiallyCaptured
                | PaymentStatus::PartiallyRefunded
                | PaymentStatus::Refunded
        )
    }

    /// Whether the authorization succeeded and was not released (a repeated authorize
    /// command is answered `authorized`; a voided payment is answered `voided`).
    pub fn was_authorized(self) -> bool {
        self == PaymentStatus::Authorized || self.is_captured()
    }

    /// Whether nothing can happen to the payment any more.
    pub fn is_final(self) -> bool {
        TRANSITIONS.iter().all(|t| self.next(*t).is_err())
    }

    /// The name stored and shown (`partially_captured`).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::PartiallyCaptured => "partially_captured",
            PaymentStatus::Captured => "captured",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
        }
    }
}

/// Every transition, for exhaustive checks.
pub const TRANSITIONS: [Transition; 11] = [
    Transition::AuthorizationSucceeded,
    Transition::AuthorizationNeedsAction,
    Transition::AuthorizationDeclined,
    Transition::AuthorizationFailed,
    Transition::ChallengeCompleted,
    Transition::ChallengeAbandoned,
    Transition::CaptureAll,
    Transition::CapturePart,
    Transition::Void,
    Transition::RefundPart,
    Transition::RefundRest,
];

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status payments does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment status {0:?}")]
pub struct UnknownStatus(String);

impl FromStr for PaymentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl TryFrom<String> for PaymentStatus {
    type Error = UnknownStatus;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// Why a capture cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// More than the authorization holds.
    #[error("cannot capture {requested}: only {authorized} is authorized")]
    OverAuthorized {
        /// Asked for, minor units.
        requested: i64,
        /// Held, minor units.
        authorized: i64,
    },
}

/// How much a capture takes and which transition it is: the whole authorization when no
/// amount is given or the amount equals it, a partial capture when less.
pub fn capture(authorized: i64, requested: Option<i64>) -> Result<(i64, Transition), CaptureError> {
    match requested {
        None => Ok((authorized, Transition::CaptureAll)),
        Some(amount) if amount == authorized => Ok((amount, Transition::CaptureAll)),
        Some(amount) if amount < authorized => Ok((amount, Transition::CapturePart)),
        Some(amount) => Err(CaptureError::OverAuthorized {
            requested: amount,
            authorized,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{PaymentStatus as S, Transition as T, *};

    #[test]
    fn a_card_is_authorized_captured_in_part_and_refunded_in_full() {
        let mut status = S::Pending;
        for transition in [
            T::AuthorizationSucceeded,
            T::CapturePart,
            T::RefundPart,
            T::RefundRest,
        ] {
            status = status.next(transition).unwrap();
        }
        assert_eq!(status, S::Refunded);
    }

    #[test]
    fn a_completed_challenge_authorizes_and_a_full_capture_is_not_partial() {
        let status = S::Pending
            .next(T::AuthorizationNeedsAction)
            .and_then(|s| s.next(T::ChallengeCompleted))
            .and_then(|s| s.next(T::CaptureAll))
            .unwrap();
        assert_eq!(status, S::Captured);
    }

    #[test]
    fn an_abandoned_challenge_declines_and_an_unanswered_one_can_be_voided() {
        assert_eq!(
            S::RequiresAction.next(T::ChallengeAbandoned),
            Ok(S::Declined)
        );
        assert_eq!(S::RequiresAction.next(T::Void), Ok(S::Voided));
        assert!(S::RequiresAction.next(T::CaptureAll).is_err());
    }

    #[test]
    fn a_voided_payment_cannot_be_captured_or_refunded() {
        for t in [
            T::CaptureAll,
            T::CapturePart,
            T::RefundPart,
            T::RefundRest,
            T::Void,
        ] {
            assert_eq!(
                S::Voided.next(t),
                Err(Illegal {
                    from: S::Voided,
                    transition: t
                })
            );
        }
    }

    #[test]
    fn captured_money_cannot_be_voided_or_captured_again() {
        for from in [
            S::Captured,
            S::PartiallyCaptured,
            S::PartiallyRefunded,
            S::Refunded,
        ] {
            for t in [
                T::Void,
                T::CaptureAll,
                T::CapturePart,
                T::ChallengeCompleted,
            ] {
                assert!(from.next(t).is_err(), "{from} took {t:?}");
            }
        }
    }

    #[test]
    fn only_a_failed_authorization_may_be_tried_again() {
        assert_eq!(S::Failed.next(T::AuthorizationSucceeded), Ok(S::Authorized));
        for from in [S::Authorized, S::Declined, S::RequiresAction, S::Captured] {
            assert!(from.next(T::AuthorizationSucceeded).is_err(), "{from}");
        }
    }

    #[test]
    fn refunded_voided_and_declined_are_final_and_nothing_else_is() {
        let finals: Vec<S> = S::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [S::Refunded, S::Voided, S::Declined]);
    }

    #[test]
    fn the_table_has_exactly_its_rows() {
        let legal = S::ALL
            .iter()
            .flat_map(|s| TRANSITIONS.iter().map(move |t| s.next(*t)))
            .filter(Result::is_ok)
            .count();
        // 2 states × 4 authorization answers, 2 challenge answers, 2 voids, 2 captures,
        // 3 states × 2 refunds.
        assert_eq!(legal, 8 + 2 + 2 + 2 + 6);
    }

    #[test]
    fn a_voided_authorization_is_not_restated_as_authorized() {
        assert!(!S::Voided.was_authorized());
        assert!(S::Authorized.was_authorized());
        assert!(S::PartiallyRefunded.was_authorized());
        for s in [S::Pending, S::RequiresAction, S::Declined, S::Failed] {
            assert!(!s.was_authorized(), "{s}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in S::ALL {
            assert_eq!(status.as_str().parse::<S>(), Ok(status));
        }
        assert!("settled".parse::<S>().is_err());
    }

    #[test]
    fn a_capture_takes_all_without_an_amount_and_never_more_than_authorized() {
        assert_eq!(capture(1000, None), Ok((1000, T::CaptureAll)));
        assert_eq!(capture(1000, Some(1000)), Ok((1000, T::CaptureAll)));
        assert_eq!(capture(1000, Some(400)), Ok((400, T::CapturePart)));
        assert_eq!(
            capture(1000, Some(1001)),
            Err(CaptureError::OverAuthorized {
                requested: 1001,
                authorized: 1000
            })
        );
    }
}
