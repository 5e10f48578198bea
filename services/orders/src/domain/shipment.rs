//! `POST /v1/orders/{id}/ship`: the carrier and tracking number, checked field by field.

use serde::Deserialize;
use utoipa::ToSchema;

use super::checkout::{FieldErrors, length, no_control};

/// `POST /v1/orders/{id}/ship`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipRequest {
    /// Who carries it, 1-100 characters.
    pub carrier: String,
    /// The carrier's tracking number, 1-100 characters.
    pub tracking_number: String,
}

impl ShipRequest {
    /// Every field error at once (control characters, lengths); trims the strings. Error
    /// messages never repeat the value.
    pub fn validate(mut self) -> Result<Self, FieldErrors> {
        let mut fields = FieldErrors::new();
        for (name, value) in [
            ("carrier", &mut self.carrier),
            ("tracking_number", &mut self.tracking_number),
        ] {
            *value = value.trim().to_owned();
            if no_control(&mut fields, name, value) {
                length(&mut fields, name, value, 1, 100);
            }
        }
        if fields.is_empty() {
            Ok(self)
        } else {
            Err(fields)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ship(carrier: &str, tracking_number: &str) -> Result<ShipRequest, FieldErrors> {
        ShipRequest {
            carrier: carrier.into(),
            tracking_number: tracking_number.into(),
        }
        .validate()
    }

    #[test]
    fn a_carrier_and_tracking_number_are_trimmed_and_kept() {
        let request = ship("  SEUR ", "ES123\u{e9}").unwrap();
        assert_eq!(request.carrier, "SEUR");
        assert_eq!(request.tracking_number, "ES123\u{e9}");
    }

    #[test]
    fn empty_long_or_control_characters_are_refused_naming_the_field() {
        let fields = ship(" ", &"9".repeat(101)).unwrap_err();
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["carrier", "tracking_number"]);
        let fields = ship("SE\u{0}UR", "1\n2").unwrap_err();
        assert_eq!(fields.len(), 2);
        assert!(fields.iter().all(|(_, m)| m.contains("control")));
    }
}
