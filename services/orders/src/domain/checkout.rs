//! The checkout request, checked field by field, and the money of priced lines.

use serde::{Deserialize, Serialize};
use tienda_events::{Money, money::Currency};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most lines in one order.
pub const MAX_LINES: usize = 50;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 100;

/// `POST /v1/checkout`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// Where to write to about the order (at most 254 characters).
    pub email: String,
    /// Where to ship it.
    pub shipping_address: Address,
    /// The payment provider's token for the payment method (`pm_card_visa`), never a card
    /// number: 1-100 visible ASCII characters.
    pub payment_method: String,
    /// What to order, 1-50 lines, one per SKU; when left out, the customer's cart (which
    /// checkout empties).
    #[serde(default)]
    pub items: Option<Vec<ItemRequest>>,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient, 1-100 characters.
    pub name: String,
    /// 1-200 characters.
    pub line1: String,
    /// At most 200 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// 1-100 characters.
    pub city: String,
    /// 1-20 characters.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (`ES`).
    pub country: String,
}

/// One line of a checkout.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    /// The product the SKU belongs to; when given, it must be the SKU's.
    #[serde(default)]
    pub product_id: Option<Uuid>,
    /// The variant.
    pub sku: String,
    /// 1-100 units.
    pub quantity: u32,
}

/// A line priced from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The product.
    pub product_id: Uuid,
    /// The variant.
    pub sku: String,
    /// The product's name now.
    pub name: String,
    /// Units.
    pub quantity: u32,
    /// The price of one unit now.
    pub unit_price: Money,
}

/// Field errors: `(field, message)`.
pub type FieldErrors = Vec<(String, String)>;

pub(crate) fn length(fields: &mut FieldErrors, field: &str, value: &str, min: usize, max: usize) {
    let n = value.trim().chars().count();
    if n < min || n > max {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        };
        fields.push((field.to_owned(), message));
    }
}

/// Whether `value` holds a run of 13-19 digits (spaces, dots and dashes between them
/// ignored) that passes the Luhn check: a payment card number.
pub fn contains_card_number(value: &str) -> bool {
    value
        .split(|c: char| !(c.is_ascii_digit() || matches!(c, ' ' | '.' | '-')))
        .any(|run| {
            let digits: Vec<u32> = run.chars().filter_map(|c| c.to_digit(10)).collect();
            (13..=19).contains(&digits.len()) && luhn(&digits)
        })
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Refuses control characters (NUL, line breaks, ...) in a text field; they have no place
/// in an address and some cannot be stored.
pub fn no_control(fields: &mut FieldErrors, field: &str, value: &str) -> bool {
    if value.chars().any(char::is_control) {
        fields.push((
            field.to_owned(),
            "must not contain control characters".into(),
        ));
        return false;
    }
    true
}

impl CheckoutRequest {
    /// Every field error at once; trims the strings it keeps. Error messages never repeat
    /// the value.
    pub fn validate(mut self) -> Result<Self, FieldErrors> {
        let mut fields = FieldErrors::new();
        self.email = self.email.trim().to_owned();
        let email_clean = no_control(&mut fields, "email", &self.email);
        let email_ok = self.email.chars().count() <= 254
            && self.email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
            })
            && !self.email.chars().any(char::is_whitespace);
        if email_clean && !email_ok {
            fields.push(("email".into(), "must be an email address".into()));
        }
        let a = &mut self.shipping_address;
        for (name, value, min, max) in [
            ("name", &mut a.name, 1, 100),
            ("line1", &mut a.line1, 1, 200),
            ("city", &mut a.city, 1, 100),
            ("postal_code", &mut a.postal_code, 1, 20),
        ] {
            *value = value.trim().to_owned();
            let field = format!("shipping_address.{name}");
            if no_control(&mut fields, &field, value) {
                length(&mut fields, &field, value, min, max);
            }
        }
        if let Some(line2) = &mut a.line2 {
            *line2 = line2.trim().to_owned();
            if no_control(&mut fields, "shipping_address.line2", line2) {
                length(&mut fields, "shipping_address.line2", line2, 0, 200);
            }
            if line2.is_empty() {
                a.line2 = None;
            }
        }
        a.country = a.country.trim().to_owned();
        let country_clean = no_control(&mut fields, "shipping_address.country", &a.country);
        if country_clean
            && !(a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase()))
        {
            fields.push((
                "shipping_address.country".into(),
                "must be an ISO 3166-1 alpha-2 code such as ES".into(),
            ));
        }
        if contains_card_number(&self.payment_method) {
            fields.push((
                "payment_method".into(),
                "must be the payment provider's token for the card, never the card number".into(),
            ));
        } else if self.payment_method.is_empty()
            || self.payment_method.len() > 100
            || !self.payment_method.bytes().all(|b| b.is_ascii_graphic())
        {
            fields.push((
                "payment_method".into(),
                "must be a payment method token (1-100 visible ASCII characters)".into(),
            ));
        }
        let items = self.items.as_deref().unwrap_or_default();
        if self.items.is_some() && (items.is_empty() || items.len() > MAX_LINES) {
            fields.push(("items".into(), format!("must have 1 to {MAX_LINES} lines")));
        }
        check_lines(
            &mut fields,
            items.iter().map(|i| (i.sku.as_str(), i.quantity)),
            "order",
        );
        if fields.is_empty() {
            Ok(self)
        } else {
            Err(fields)
        }
    }
}

/// Checks `items` lines `(sku, quantity)`: each a SKU, once, 1 to [`MAX_QUANTITY`] units;
/// errors name `items[i].sku` and `items[i].quantity`. `verb` says what the lines are for
/// ("order", "return").
pub fn check_lines<'a>(
    fields: &mut FieldErrors,
    lines: impl Iterator<Item = (&'a str, u32)>,
    verb: &str,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, (sku, quantity)) in lines.enumerate() {
        if !valid_sku(sku) {
            fields.push((format!("items[{i}].sku"), "must be a SKU".into()));
        } else if !seen.insert(sku) {
            fields.push((
                format!("items[{i}].sku"),
                format!("appears in another line; {verb} it once with the total quantity"),
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            fields.push((
                format!("items[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
    }
}

/// Whether `sku` is a SKU as products accepts them: 1-64 letters, digits, '.', '_', '-'.
pub fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// What an order costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Totals {
    /// The lines' sum.
    pub subtotal: Money,
    /// What the customer pays (shipping and tax come later: today the subtotal).
    pub total: Money,
}

/// The totals of `lines`: one currency, no overflow. Errors name the line at fault.
pub fn totals(lines: &[PricedLine]) -> Result<Totals, FieldErrors> {
    let currency: Currency = match lines.first() {
        Some(line) => line.unit_price.currency,
        None => return Err(vec![("items".into(), "must have at least one line".into())]),
    };
    let mut sum: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.unit_price.currency != currency {
            return Err(vec![(
                format!("items[{i}].sku"),
                format!(
                    "is priced in {}, the rest of the order in {currency}; order them separately",
                    line.unit_price.currency
                ),
            )]);
        }
        sum = line
            .unit_price
            .amount
            .checked_mul(i64::from(line.quantity))
            .and_then(|amount| sum.checked_add(amount))
            .ok_or_else(|| vec![("items".into(), "the order's total is too large".into())])?;
    }
    let subtotal = Money {
        amount: sum,
        currency,
    };
    Ok(Totals {
        subtotal,
        total: subtotal,
    })
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

    fn line(sku: &str, quantity: u32, price: Money) -> PricedLine {
        PricedLine {
            product_id: Uuid::nil(),
            sku: sku.into(),
            name: sku.into(),
            quantity,
            unit_price: price,
        }
    }

    fn request(body: serde_json::Value) -> CheckoutRequest {
        serde_json::from_value(body).unwrap()
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "email": " ana@example.com ",
            "shipping_address": {"name": "Ana", "line1": "Calle Mayor 1", "city": "Madrid",
                                 "postal_code": "28013", "country": "ES"},
            "payment_method": "pm_card_visa",
            "items": [{"product_id": Uuid::nil(), "sku": "MUG-1", "quantity": 2}]
        })
    }

    #[test]
    fn totals_are_integer_minor_units() {
        let t = totals(&[line("A", 3, eur(1999)), line("B", 1, eur(1))]).unwrap();
        assert_eq!(t.subtotal, eur(5998));
        assert_eq!(t.total, eur(5998));
    }

    #[test]
    fn mixed_currencies_and_overflow_are_refused_naming_the_line() {
        let usd = Money {
            amount: 100,
            currency: "USD".parse().unwrap(),
        };
        let err = totals(&[line("A", 1, eur(100)), line("B", 1, usd)]).unwrap_err();
        assert_eq!(err[0].0, "items[1].sku");
        assert!(totals(&[line("A", 100, eur(i64::MAX / 10))]).is_err());
    }

    #[test]
    fn a_valid_request_is_trimmed() {
        let ok = request(valid()).validate().unwrap();
        assert_eq!(ok.email, "ana@example.com");
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut body = valid();
        body["email"] = "not-an-email".into();
        body["shipping_address"]["country"] = "Spain".into();
        body["shipping_address"]["name"] = "".into();
        body["payment_method"] = "".into();
        body["items"] = serde_json::json!([
            {"product_id": Uuid::nil(), "sku": "MUG-1", "quantity": 0},
            {"product_id": Uuid::nil(), "sku": "MUG-1", "quantity": 101},
            {"product_id": Uuid::nil(), "sku": "no spaces", "quantity": 1},
        ]);
        let fields: Vec<String> = request(body)
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "email",
                "shipping_address.name",
                "shipping_address.country",
                "payment_method",
                "items[0].quantity",
                "items[1].sku",
                "items[1].quantity",
                "items[2].sku",
            ]
        );
    }

    #[test]
    fn a_card_number_as_payment_method_is_refused_without_repeating_it() {
        for card in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "4242.4242.4242.4242",
            "card:5555555555554444",
            "378282246310005",
        ] {
            let mut body = valid();
            body["payment_method"] = card.into();
            let errors = request(body).validate().unwrap_err();
            assert_eq!(errors.len(), 1, "{card}: {errors:?}");
            assert_eq!(errors[0].0, "payment_method");
            assert!(errors[0].1.contains("never the card number"), "{card}");
            assert!(!errors[0].1.contains("4242") && !errors[0].1.contains(card));
        }
        // Tokens and digit runs that are not card numbers pass.
        for token in [
            "pm_card_visa",
            "pm_1MqLiJLkdIwHu7ixUEgbFdYF",
            "tok_4242424242424241",
        ] {
            let mut body = valid();
            body["payment_method"] = token.into();
            assert!(request(body).validate().is_ok(), "{token}");
        }
    }

    #[test]
    fn control_characters_are_refused_in_every_text_field_naming_it() {
        for (path, field) in [
            (&["email"][..], "email"),
            (&["shipping_address", "name"], "shipping_address.name"),
            (&["shipping_address", "line1"], "shipping_address.line1"),
            (&["shipping_address", "line2"], "shipping_address.line2"),
            (&["shipping_address", "city"], "shipping_address.city"),
            (
                &["shipping_address", "postal_code"],
                "shipping_address.postal_code",
            ),
            (&["shipping_address", "country"], "shipping_address.country"),
            (&["payment_method"], "payment_method"),
            (&["items", "0", "sku"], "items[0].sku"),
        ] {
            let mut body = valid();
            let mut at = &mut body;
            for key in &path[..path.len() - 1] {
                at = match key.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*key],
                };
            }
            at[path[path.len() - 1]] = "ab\u{0}c".into();
            let errors = request(body).validate().unwrap_err();
            let named: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
            assert_eq!(named, [field], "{errors:?}");
        }
    }

    #[test]
    fn line_counts_are_bounded() {
        let mut body = valid();
        body["items"] = serde_json::json!([]);
        assert_eq!(request(body.clone()).validate().unwrap_err()[0].0, "items");
        body["items"] = (0..=MAX_LINES)
            .map(|i| serde_json::json!({"product_id": Uuid::nil(), "sku": format!("S-{i}"), "quantity": 1}))
            .collect();
        assert_eq!(request(body).validate().unwrap_err()[0].0, "items");
    }
}
