//! Money: integer minor units with a currency. Never floats.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in the currency's minor unit (cents for EUR): `{"amount": 1999, "currency": "EUR"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Money {
    /// Minor units; negative only for refunds and adjustments.
    pub amount: i64,
    /// ISO 4217 code.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "EUR"))]
    pub currency: Currency,
}

/// An ISO 4217 currency code: three ASCII upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// A string that is not a currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an ISO 4217 currency code (three upper-case letters such as EUR)")]
pub struct InvalidCurrency(String);

impl Currency {
    /// The code, e.g. `EUR`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidCurrency;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.as_str().parse()
    }
}

impl std::str::FromStr for Currency {
    type Err = InvalidCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(InvalidCurrency(s.to_owned())),
        }
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Currency {
    /// Digits after the decimal point of the currency's minor unit (ISO 4217): 0 for JPY,
    /// 3 for KWD, 2 for the rest.
    pub fn exponent(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

/// For people: `12.50 EUR`, `1200 JPY`, `-3.000 KWD`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent();
        let sign = if self.amount < 0 { "-" } else { "" };
        let units = self.amount.unsigned_abs();
        if exponent == 0 {
            return write!(f, "{sign}{units} {}", self.currency);
        }
        let scale = 10u64.pow(exponent);
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            units / scale,
            units % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_integer_minor_units_with_a_code() {
        let m: Money = serde_json::from_str(r#"{"amount":1999,"currency":"EUR"}"#).unwrap();
        assert_eq!(m.amount, 1999);
        assert_eq!(m.currency.as_str(), "EUR");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amount":1999,"currency":"EUR"}"#
        );
    }

    #[test]
    fn money_reads_in_major_units() {
        let money = |amount, currency: &str| Money {
            amount,
            currency: currency.parse().unwrap(),
        };
        assert_eq!(money(1250, "EUR").to_string(), "12.50 EUR");
        assert_eq!(money(5, "USD").to_string(), "0.05 USD");
        assert_eq!(money(1200, "JPY").to_string(), "1200 JPY");
        assert_eq!(money(-3000, "KWD").to_string(), "-3.000 KWD");
        assert_eq!(
            money(i64::MIN, "EUR").to_string(),
            "-92233720368547758.08 EUR"
        );
    }

    #[test]
    fn floats_and_bad_codes_are_rejected() {
        assert!(serde_json::from_str::<Money>(r#"{"amount":19.99,"currency":"EUR"}"#).is_err());
        for code in ["eur", "EURO", "E1R", ""] {
            assert!(code.parse::<Currency>().is_err(), "{code}");
        }
    }
}
