//! The languages messages are written in, and how money reads in each.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use tienda_events::money::Money;

/// A language every template ships in.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    /// Spanish.
    Es,
    /// English.
    En,
}

impl Locale {
    /// Every shipped locale.
    pub const ALL: [Locale; 2] = [Locale::Es, Locale::En];

    /// The BCP 47 tag (`es`, `en`).
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Es => "es",
            Locale::En => "en",
        }
    }

    /// `amount` as a reader of this language expects it: `19,99 EUR` (es), `EUR 19.99` (en).
    /// Currencies without minor units (JPY, KRW, ...) print no decimals.
    pub fn money(self, amount: &Money) -> String {
        let code = amount.currency.as_str();
        let decimals = minor_digits(code);
        let sign = if amount.amount < 0 { "-" } else { "" };
        let abs = amount.amount.unsigned_abs();
        let number = if decimals == 0 {
            abs.to_string()
        } else {
            let unit = 10u64.pow(decimals);
            let separator = match self {
                Locale::Es => ',',
                Locale::En => '.',
            };
            format!(
                "{}{separator}{:0width$}",
                abs / unit,
                abs % unit,
                width = decimals as usize
            )
        };
        match self {
            Locale::Es => format!("{sign}{number} {code}"),
            Locale::En => format!("{sign}{code} {number}"),
        }
    }
}

/// ISO 4217 minor-unit digits for the currencies that do not use two.
fn minor_digits(code: &str) -> u32 {
    match code {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A string that names no shipped locale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a supported locale (es, en)")]
pub struct UnknownLocale(String);

impl FromStr for Locale {
    type Err = UnknownLocale;

    /// `es`, `es-ES`, `en_GB`, ... (the language part decides).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let language = s.split(['-', '_']).next().unwrap_or_default();
        match language.to_ascii_lowercase().as_str() {
            "es" => Ok(Locale::Es),
            "en" => Ok(Locale::En),
            _ => Err(UnknownLocale(s.to_owned())),
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: i64) -> Money {
        serde_json::from_value(serde_json::json!({"amount": amount, "currency": "EUR"})).unwrap()
    }

    #[test]
    fn money_reads_with_a_comma_in_spanish_and_a_point_in_english() {
        assert_eq!(Locale::Es.money(&eur(1999)), "19,99 EUR");
        assert_eq!(Locale::En.money(&eur(1999)), "EUR 19.99");
        assert_eq!(Locale::En.money(&eur(5)), "EUR 0.05");
        assert_eq!(Locale::Es.money(&eur(-250)), "-2,50 EUR");
    }

    #[test]
    fn currencies_without_minor_units_print_no_decimals() {
        let yen: Money =
            serde_json::from_value(serde_json::json!({"amount": 1500, "currency": "JPY"})).unwrap();
        assert_eq!(Locale::En.money(&yen), "JPY 1500");
    }

    #[test]
    fn regional_tags_pick_their_language_and_others_are_refused() {
        assert_eq!("es-ES".parse(), Ok(Locale::Es));
        assert_eq!("en_GB".parse(), Ok(Locale::En));
        assert!("fr".parse::<Locale>().is_err());
    }
}
