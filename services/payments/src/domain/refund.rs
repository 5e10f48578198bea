//! The refund bound: the refunds of a payment never add up to more than was captured.

use crate::domain::payment::Transition;

/// Why a refund cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefundError {
    /// The refund would take the total past the capture.
    #[error("cannot refund {requested}: only {refundable} of the captured {captured} is left")]
    ExceedsCaptured {
        /// Asked for, minor units.
        requested: i64,
        /// What is left to refund.
        refundable: i64,
        /// What was captured.
        captured: i64,
    },
}

/// The transition a refund of `requested` makes on a payment that captured `captured` and
/// has refunded `refunded` so far: the rest, or a part; never past the capture.
pub fn refund(captured: i64, refunded: i64, requested: i64) -> Result<Transition, RefundError> {
    let refundable = captured.saturating_sub(refunded).max(0);
    if requested > refundable {
        return Err(RefundError::ExceedsCaptured {
            requested,
            refundable,
            captured,
        });
    }
    Ok(if requested == refundable {
        Transition::RefundRest
    } else {
        Transition::RefundPart
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_refunds_add_up_to_the_capture_and_no_further() {
        assert_eq!(refund(1000, 0, 300), Ok(Transition::RefundPart));
        assert_eq!(refund(1000, 300, 700), Ok(Transition::RefundRest));
        assert_eq!(
            refund(1000, 600, 500),
            Err(RefundError::ExceedsCaptured {
                requested: 500,
                refundable: 400,
                captured: 1000
            })
        );
        assert!(refund(1000, 1000, 1).is_err());
    }

    #[test]
    fn a_partial_capture_bounds_refunds_by_what_was_captured_not_authorized() {
        assert!(refund(400, 0, 401).is_err());
        assert_eq!(refund(400, 0, 400), Ok(Transition::RefundRest));
    }

    #[test]
    fn huge_amounts_do_not_overflow_the_bound() {
        assert!(refund(i64::MAX, 1, i64::MAX).is_err());
        assert_eq!(refund(i64::MAX, 0, i64::MAX), Ok(Transition::RefundRest));
    }
}
