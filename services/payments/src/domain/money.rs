//! Money as payments handles it: a positive amount in the currency's minor unit, with the
//! currency's own exponent (JPY has none, EUR two, KWD three). Never floats.

use std::fmt;

use tienda_events::money::{Currency, Money};

/// ISO 4217 currencies without a minor unit (the amount is whole yen, won, ...).
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// ISO 4217 currencies with thousandths (fils, baisa, millimes).
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// Currencies with cents that payments accepts. A code outside all three lists is refused
/// rather than guessed at: an unknown exponent would move a decimal point.
const EXPONENT_2: &[&str] = &[
    "AED", "ARS", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "COP", "CZK", "DKK", "EGP", "EUR",
    "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "MAD", "MXN", "MYR", "NOK", "NZD", "PEN", "PHP",
    "PKR", "PLN", "QAR", "RON", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "ZAR",
];

/// How many decimal digits the currency's minor unit has, or `None` for a currency payments
/// does not know.
pub fn exponent(currency: Currency) -> Option<u32> {
    let code = currency.as_str();
    if EXPONENT_0.contains(&code) {
        Some(0)
    } else if EXPONENT_2.contains(&code) {
        Some(2)
    } else if EXPONENT_3.contains(&code) {
        Some(3)
    } else {
        None
    }
}

/// Why a [`Money`] cannot be charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Zero or negative.
    #[error("the amount must be more than zero (got {0})")]
    NotPositive(i64),
    /// A currency payments has no exponent for.
    #[error("{0} is not a currency payments supports")]
    UnsupportedCurrency(Currency),
    /// Another currency than the payment's.
    #[error("the amount is in {got}, the payment in {expected}")]
    CurrencyMismatch {
        /// The payment's currency.
        expected: Currency,
        /// The command's.
        got: Currency,
    },
}

/// A positive amount in minor units of a supported currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    minor: i64,
    currency: Currency,
}

impl Amount {
    /// Parses a contract [`Money`]: positive, in a currency with a known exponent.
    pub fn parse(money: Money) -> Result<Self, MoneyError> {
        if money.amount <= 0 {
            return Err(MoneyError::NotPositive(money.amount));
        }
        exponent(money.currency).ok_or(MoneyError::UnsupportedCurrency(money.currency))?;
        Ok(Self {
            minor: money.amount,
            currency: money.currency,
        })
    }

    /// Parses `money` and checks it is in `currency`.
    pub fn parse_in(money: Money, currency: Currency) -> Result<Self, MoneyError> {
        if money.currency != currency {
            return Err(MoneyError::CurrencyMismatch {
                expected: currency,
                got: money.currency,
            });
        }
        Self::parse(money)
    }

    /// Minor units.
    pub fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The contract form.
    pub fn money(self) -> Money {
        Money {
            amount: self.minor,
            currency: self.currency,
        }
    }

    /// The amount in major units as a decimal string with the currency's digits (`"12.345"`
    /// for 12345 KWD minor units, `"500"` for 500 JPY): the form PayPal's API takes.
    pub fn decimal(self) -> String {
        let exponent = exponent(self.currency).expect("checked when parsed");
        if exponent == 0 {
            return self.minor.to_string();
        }
        let scale = 10i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = exponent as usize
        )
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.decimal(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: i64, currency: &str) -> Money {
        Money {
            amount,
            currency: currency.parse().unwrap(),
        }
    }

    #[test]
    fn each_currency_has_its_own_exponent() {
        assert_eq!(exponent("JPY".parse().unwrap()), Some(0));
        assert_eq!(exponent("EUR".parse().unwrap()), Some(2));
        assert_eq!(exponent("KWD".parse().unwrap()), Some(3));
        assert_eq!(exponent("XYZ".parse().unwrap()), None);
    }

    #[test]
    fn amounts_print_with_the_currency_digits() {
        assert_eq!(Amount::parse(money(500, "JPY")).unwrap().decimal(), "500");
        assert_eq!(
            Amount::parse(money(1999, "EUR")).unwrap().decimal(),
            "19.99"
        );
        assert_eq!(Amount::parse(money(5, "EUR")).unwrap().decimal(), "0.05");
        assert_eq!(
            Amount::parse(money(12345, "KWD")).unwrap().to_string(),
            "12.345 KWD"
        );
        assert_eq!(Amount::parse(money(7, "KWD")).unwrap().decimal(), "0.007");
    }

    #[test]
    fn zero_negative_and_unknown_currencies_are_refused() {
        assert_eq!(
            Amount::parse(money(0, "EUR")),
            Err(MoneyError::NotPositive(0))
        );
        assert_eq!(
            Amount::parse(money(-5, "EUR")),
            Err(MoneyError::NotPositive(-5))
        );
        assert!(matches!(
            Amount::parse(money(100, "XYZ")),
            Err(MoneyError::UnsupportedCurrency(_))
        ));
    }

    #[test]
    fn an_amount_in_another_currency_than_the_payment_is_refused() {
        let eur = "EUR".parse().unwrap();
        assert!(matches!(
            Amount::parse_in(money(100, "USD"), eur),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert_eq!(
            Amount::parse_in(money(100, "EUR"), eur).unwrap().minor(),
            100
        );
    }
}
