//! Fraud rules, run before a new payment is sent to the provider: each gives a verdict
//! (allow, review, block) with its reason, and the payment gets the strictest. A blocked
//! payment is declined with code `fraud_blocked` and never reaches the provider; one held for
//! review is authorized as usual and listed for an admin to decide before it ships (as card
//! networks' "review" works: the money is held, nobody is charged until capture).
//!
//! The signals come from payments' own history: of the customer (their account, or their
//! email for a guest), of the card (its fingerprint, which the provider reports for the payment
//! method: the same card number has one fingerprint whatever the token), and of the address
//! the checkout came from. Countries: the card's (its issuer's, from the provider), the
//! billing address's (from orders) and the address's (a GeoIP table, when one is configured).
//! A signal nobody reported (a PayPal wallet has no card; a guest behind no gateway has no
//! address) leaves its rule silent.

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
    /// The rule: `velocity`, `declines`, `amount`, `first_payment_amount`, `card_shared`,
    /// `card_testing`, `country_mismatch`.
    pub rule: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// What it saw, for the admin.
    pub detail: String,
}

/// The customer's history as the rules need it (this payment excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// Payments in the velocity window.
    pub recent: i64,
    /// Declined payments in a row, most recent first (any other outcome ends the run).
    pub consecutive_declines: i64,
    /// Authorized (or later) payments in this currency.
    pub prior_authorized: i64,
    /// Their average amount, minor units.
    pub average_authorized: Option<i64>,
    /// Other customers who paid with the same card (fingerprint) within
    /// [`Rules::CARD_WINDOW_HOURS`].
    pub card_other_customers: i64,
    /// Different cards tried from the checkout's address within
    /// [`Rules::ADDRESS_WINDOW_MINUTES`], this one included (0: no address or no card known).
    pub address_cards: i64,
    /// Where the card, the billing address and the checkout's address are.
    pub countries: Countries,
}

/// Countries (ISO 3166-1 alpha-2) the payment touches; `None` where nobody said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Countries {
    /// The card's issuer's.
    pub card: Option<String>,
    /// The billing address's.
    pub billing: Option<String>,
    /// The checkout's IP address's.
    pub ip: Option<String>,
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
    /// Review when the card paid for this many other customers in the card window...
    pub card_customers_review: i64,
    /// ... and block at this many.
    pub card_customers_block: i64,
    /// Block when more than this many cards were tried from one address in the address
    /// window (card testing).
    pub address_cards_max: i64,
}

impl Rules {
    /// The velocity window.
    pub const VELOCITY_WINDOW_MINUTES: i64 = 10;
    /// The window in which a card shared between customers counts.
    pub const CARD_WINDOW_HOURS: i64 = 24;
    /// The window in which cards tried from one address count.
    pub const ADDRESS_WINDOW_MINUTES: i64 = 60;
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            velocity_max: 5,
            declines_max: 3,
            amount_factor: 10,
            min_history: 3,
            first_payment_review_major: 1_000,
            card_customers_review: 2,
            card_customers_block: 4,
            address_cards_max: 4,
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
    if signals.card_other_customers >= rules.card_customers_review {
        let verdict = if signals.card_other_customers >= rules.card_customers_block {
            Verdict::Block
        } else {
            Verdict::Review
        };
        say(
            "card_shared",
            verdict,
            format!(
                "the card paid for {} other customers in {} hours",
                signals.card_other_customers,
                Rules::CARD_WINDOW_HOURS
            ),
        );
    }
    if signals.address_cards > rules.address_cards_max {
        say(
            "card_testing",
            Verdict::Block,
            format!(
                "{} different cards tried from the checkout's address in {} minutes",
                signals.address_cards,
                Rules::ADDRESS_WINDOW_MINUTES
            ),
        );
    }
    if let Some(detail) = country_mismatch(&signals.countries) {
        say("country_mismatch", Verdict::Review, detail);
    }
    let verdict = reasons
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Allow);
    (verdict, reasons)
}

/// Whether `ip` can say where a customer is: not loopback, private, shared (carrier-grade
/// NAT), link-local or unspecified. Such addresses name a proxy or a local run, where every
/// customer shares one address, so the address rules leave them out.
pub fn is_customer_address(ip: std::net::IpAddr) -> bool {
    tienda_kit::net::is_public(ip)
}

/// What disagrees among the countries, if anything: the card's against the billing
/// address's, and the checkout's address against both (travellers and VPNs are common, so a
/// mismatch is a review, never a block).
fn country_mismatch(c: &Countries) -> Option<String> {
    let mut seen = Vec::new();
    if let (Some(card), Some(billing)) = (&c.card, &c.billing)
        && card != billing
    {
        seen.push(format!(
            "card issued in {card}, billing address in {billing}"
        ));
    }
    if let Some(ip) = &c.ip {
        let known: Vec<&String> = [&c.card, &c.billing].into_iter().flatten().collect();
        if !known.is_empty() && known.iter().all(|k| *k != ip) {
            seen.push(format!("checkout from an address in {ip}"));
        }
    }
    (!seen.is_empty()).then(|| seen.join("; "))
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

#[cfg(test)]
mod card_and_address_tests {
    use super::*;

    #[test]
    fn local_and_private_addresses_say_nothing_of_the_customer() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_customer_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.7",
            "81.2.3.4",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:81.2.3.4",
        ] {
            assert!(is_customer_address(ip.parse().unwrap()), "{ip}");
        }
    }

    fn eur(amount: i64) -> Money {
        Money {
            amount,
            currency: "EUR".parse().unwrap(),
        }
    }

    fn countries(card: Option<&str>, billing: Option<&str>, ip: Option<&str>) -> Signals {
        Signals {
            prior_authorized: 3,
            average_authorized: Some(5_000),
            countries: Countries {
                card: card.map(Into::into),
                billing: billing.map(Into::into),
                ip: ip.map(Into::into),
            },
            ..Signals::default()
        }
    }

    #[test]
    fn a_card_shared_by_customers_is_reviewed_then_blocked() {
        let rules = Rules::default();
        let shared = |n| Signals {
            card_other_customers: n,
            ..countries(None, None, None)
        };
        assert_eq!(assess(&rules, &shared(1), eur(5_000)).0, Verdict::Allow);
        let (verdict, reasons) = assess(&rules, &shared(2), eur(5_000));
        assert_eq!(verdict, Verdict::Review);
        assert_eq!(reasons[0].rule, "card_shared");
        assert!(
            reasons[0].detail.contains("2 other customers"),
            "{reasons:?}"
        );
        assert_eq!(assess(&rules, &shared(4), eur(5_000)).0, Verdict::Block);
    }

    #[test]
    fn the_fifth_card_from_one_address_in_an_hour_is_blocked() {
        let rules = Rules::default();
        let tried = |n| Signals {
            address_cards: n,
            ..countries(None, None, None)
        };
        assert_eq!(assess(&rules, &tried(4), eur(5_000)).0, Verdict::Allow);
        let (verdict, reasons) = assess(&rules, &tried(5), eur(5_000));
        assert_eq!(verdict, Verdict::Block);
        assert_eq!(reasons[0].rule, "card_testing");
    }

    #[test]
    fn countries_that_disagree_are_reviewed_and_unknown_ones_say_nothing() {
        let rules = Rules::default();
        let verdict = |c, b, i| assess(&rules, &countries(c, b, i), eur(5_000));
        assert_eq!(
            verdict(Some("ES"), Some("ES"), Some("ES")).0,
            Verdict::Allow
        );
        assert_eq!(verdict(None, None, Some("US")).0, Verdict::Allow);
        assert_eq!(verdict(Some("ES"), None, None).0, Verdict::Allow);
        // Card and billing agree, the address is the one that is elsewhere: travelling.
        let (v, reasons) = verdict(Some("ES"), Some("ES"), Some("US"));
        assert_eq!(v, Verdict::Review);
        assert_eq!(reasons[0].detail, "checkout from an address in US");
        // The address matches one of them: only the card and billing disagree.
        let (v, reasons) = verdict(Some("US"), Some("ES"), Some("ES"));
        assert_eq!(v, Verdict::Review);
        assert_eq!(reasons[0].rule, "country_mismatch");
        assert_eq!(
            reasons[0].detail,
            "card issued in US, billing address in ES"
        );
        let (_, reasons) = verdict(Some("US"), Some("ES"), Some("BR"));
        assert_eq!(
            reasons[0].detail,
            "card issued in US, billing address in ES; checkout from an address in BR"
        );
    }
}
