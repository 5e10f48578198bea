//! Fraud rules, run before a new payment is sent to the provider: each gives a verdict
//! (allow, review, block) with its reason, and the payment gets the strictest. A blocked
//! payment is declined with code `fraud_blocked` and never reaches the provider; one held for
//! review is authorized as usual and listed for an admin to decide before it ships (as card
//! networks' "review" works: the money is held, nobody is charged until capture).
//!
//! The signals come from payments' own history of the customer (their account, or their email
//! for a guest). Card fingerprints, IP addresses and the card's country need a provider that
//! reports them; the sandbox does not, so those rules are not here yet.

use serde::{Deserialize, Serialize};
use tienda_events::Money;
use utoipa::ToSchema;

/// What to do with a payment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing suspicious.
    Allow,
    /// Authorize, and have an admin look before it ships.
    Review,
    /// Decline without asking the provider.
    Block,
}

/// Why a rule spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    /// The rule: `velocity`, `declines`, `amount`, `first_payment_amount`.
    pub rule: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// What it saw, for the admin.
    pub detail: String,
}

/// The customer's history as the rules need it (this payment excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Payments in the velocity window.
    pub recent: i64,
    /// Declined payments in a row, most recent first (any other outcome ends the run).
    pub consecutive_declines: i64,
    /// Authorized (or later) payments in this currency.
    pub prior_authorized: i64,
    /// Their average amount, minor units.
    pub average_authorized: Option<i64>,
}

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Payments of one customer within [`Rules::VELOCITY_WINDOW_MINUTES`], this one included,
    /// above which it is blocked.
    pub velocity_max: i64,
    /// Declines in a row after which the next payment is blocked.
    pub declines_max: i64,
    /// Review a payment this many times the customer's average...
    pub amount_factor: i64,
    /// ... once they have at least this many payments.
    pub min_history: i64,
    /// Review a first payment at or above this many major units (1,000 EUR, 1,000 JPY ...).
    pub first_payment_review_major: i64,
}

impl Rules {
    /// The velocity window.
    pub const VELOCITY_WINDOW_MINUTES: i64 = 10;
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            velocity_max: 5,
            declines_max: 3,
            amount_factor: 10,
            min_history: 3,
            first_payment_review_major: 1_000,
        }
    }
}

/// The verdict for a payment of `amount` given the customer's `signals`: the strictest of
/// the rules', with every rule that spoke.
pub fn assess(rules: &Rules, signals: &Signals, amount: Money) -> (Verdict, Vec<Reason>) {
    let mut reasons = Vec::new();
    let mut say = |rule: &str, verdict, detail: String| {
        reasons.push(Reason {
            rule: rule.into(),
            verdict,
            detail,
        });
    };
    if signals.recent + 1 > rules.velocity_max {
        say(
            "velocity",
            Verdict::Block,
            format!(
                "{} payments by this customer in {} minutes",
                signals.recent + 1,
                Rules::VELOCITY_WINDOW_MINUTES
            ),
        );
    }
    if signals.consecutive_declines >= rules.declines_max {
        say(
            "declines",
            Verdict::Block,
            format!(
                "the customer's last {} payments were declined",
                signals.consecutive_declines
            ),
        );
    }
    match signals.average_authorized {
        Some(average)
            if signals.prior_authorized >= rules.min_history
                && average > 0
                && amount.amount / average >= rules.amount_factor =>
        {
            say(
                "amount",
                Verdict::Review,
                format!(
                    "{amount} is {}× the customer's average of {}",
                    amount.amount / average,
                    Money {
                        amount: average,
                        currency: amount.currency
                    }
                ),
            );
        }
        _ => {}
    }
    let first_limit = rules
        .first_payment_review_major
        .saturating_mul(10i64.pow(amount.currency.exponent()));
    if signals.prior_authorized == 0 && amount.amount >= first_limit {
        say(
            "first_payment_amount",
            Verdict::Review,
            format!("a first payment of {amount}"),
        );
    }
    let verdict = reasons
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Allow);
    (verdict, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        Money {
            amount,
            currency: "EUR".parse().unwrap(),
        }
    }

    fn history(prior: i64, average: i64) -> Signals {
        Signals {
            prior_authorized: prior,
            average_authorized: Some(average),
            ..Signals::default()
        }
    }

    #[test]
    fn an_ordinary_payment_is_allowed_with_no_reasons() {
        let (verdict, reasons) = assess(&Rules::default(), &history(4, 5_000), eur(6_000));
        assert_eq!(verdict, Verdict::Allow);
        assert!(reasons.is_empty());
    }

    #[test]
    fn the_sixth_payment_in_ten_minutes_is_blocked_the_fifth_is_not() {
        let rules = Rules::default();
        let recent = |n| Signals {
            recent: n,
            ..history(4, 5_000)
        };
        assert_eq!(assess(&rules, &recent(4), eur(5_000)).0, Verdict::Allow);
        let (verdict, reasons) = assess(&rules, &recent(5), eur(5_000));
        assert_eq!(verdict, Verdict::Block);
        assert_eq!(reasons[0].rule, "velocity");
        assert!(reasons[0].detail.contains("6 payments"), "{reasons:?}");
    }

    #[test]
    fn three_declines_in_a_row_block_the_next() {
        let signals = Signals {
            consecutive_declines: 3,
            ..history(4, 5_000)
        };
        let (verdict, reasons) = assess(&Rules::default(), &signals, eur(5_000));
        assert_eq!(verdict, Verdict::Block);
        assert_eq!(reasons[0].rule, "declines");
    }

    #[test]
    fn an_amount_far_above_the_customer_s_history_is_reviewed_not_blocked() {
        let (verdict, reasons) = assess(&Rules::default(), &history(3, 2_000), eur(20_000));
        assert_eq!(verdict, Verdict::Review);
        assert_eq!(reasons[0].rule, "amount");
        assert!(reasons[0].detail.contains("200.00 EUR"), "{reasons:?}");
        // Too little history to judge.
        assert_eq!(
            assess(&Rules::default(), &history(2, 2_000), eur(20_000)).0,
            Verdict::Allow
        );
    }

    #[test]
    fn a_large_first_payment_is_reviewed_in_the_currency_s_own_units() {
        let first = Signals::default();
        assert_eq!(
            assess(&Rules::default(), &first, eur(99_999)).0,
            Verdict::Allow
        );
        assert_eq!(
            assess(&Rules::default(), &first, eur(100_000)).0,
            Verdict::Review
        );
        let yen = Money {
            amount: 1_000,
            currency: "JPY".parse().unwrap(),
        };
        assert_eq!(assess(&Rules::default(), &first, yen).0, Verdict::Review);
    }

    #[test]
    fn the_strictest_verdict_wins_and_every_reason_is_kept() {
        let signals = Signals {
            recent: 9,
            ..Signals::default()
        };
        let (verdict, reasons) = assess(&Rules::default(), &signals, eur(500_000));
        assert_eq!(verdict, Verdict::Block);
        let rules: Vec<&str> = reasons.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(rules, ["velocity", "first_payment_amount"]);
    }
}
