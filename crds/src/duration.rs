//! Durations as Gateway API writes them: `"500ms"`, `"2s"`, `"1m30s"`.

use std::{borrow::Cow, fmt, str::FromStr, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The Gateway API duration pattern: one to four `<integer><unit>` pairs, units `h`, `m`, `s`,
/// `ms`. A subset of Go's `time.ParseDuration`, so CEL's `duration()` understands every value.
pub const PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A non-negative duration written as a Gateway API duration string.
///
/// The original text is kept so that a resource round-trips byte for byte (server-side apply
/// compares what we send with what is stored).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    text: String,
    value: time::Duration,
}

/// Why a string is not a Gateway API duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"500ms\", \"2s\", \"1m30s\")")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// The duration as a standard library value.
    pub fn get(&self) -> time::Duration {
        self.value
    }

    /// The text form, exactly as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let bytes = input.as_bytes();
        let (mut i, mut pairs, mut total) = (0, 0, time::Duration::ZERO);
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err("each part must start with an integer"));
            }
            if i - start > 5 {
                return Err(err("at most 5 digits per part"));
            }
            let number: u64 = input[start..i].parse().map_err(|_| err("not an integer"))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let part = match &input[unit_start..i] {
                "h" => time::Duration::from_secs(number * 3600),
                "m" => time::Duration::from_secs(number * 60),
                "s" => time::Duration::from_secs(number),
                "ms" => time::Duration::from_millis(number),
                "" => return Err(err("missing unit")),
                _ => return Err(err("unit must be one of h, m, s, ms")),
            };
            pairs += 1;
            if pairs > 4 {
                return Err(err("at most 4 parts"));
            }
            total += part;
        }
        Ok(Self {
            text: input.to_owned(),
            value: total,
        })
    }
}

impl TryFrom<String> for Duration {
    type Error = ParseDurationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Duration> for String {
    fn from(value: Duration) -> Self {
        value.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({:?})", self.text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "maxLength": 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<time::Duration, ParseDurationError> {
        s.parse::<Duration>().map(|d| d.get())
    }

    #[test]
    fn gateway_api_durations_parse_to_their_values() {
        assert_eq!(parse("500ms"), Ok(time::Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(time::Duration::from_secs(2)));
        assert_eq!(parse("1m30s"), Ok(time::Duration::from_secs(90)));
        assert_eq!(
            parse("1h2m3s4ms"),
            Ok(time::Duration::from_millis(3_723_004))
        );
        assert_eq!(parse("0s"), Ok(time::Duration::ZERO));
    }

    #[test]
    fn strings_outside_the_gateway_api_format_are_rejected() {
        for bad in [
            "",
            "1",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "1us",
            "123456s",
            "1h1m1s1ms1h",
            "1 s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn the_text_round_trips_through_serde() {
        let d: Duration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
        assert!(serde_json::from_str::<Duration>("\"90\"").is_err());
    }
}
