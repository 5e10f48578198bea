//! Property tests of the decoders that read what the bus and clients send: any input is decoded
//! or refused with an error, never a panic, and what is encoded decodes to itself. Bounded by
//! case count (proptest's 256 by default; `PROPTEST_CASES` raises it for a longer search).

use proptest::prelude::*;
use tienda_events::{
    Envelope,
    money::{Currency, Money},
    user::UserLocked,
};

proptest! {
    /// A currency is exactly three ASCII upper-case letters.
    #[test]
    fn a_currency_code_is_exactly_three_upper_case_letters(code in "\\PC{0,6}") {
        let valid = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
        prop_assert_eq!(code.parse::<Currency>().is_ok(), valid, "{:?}", code);
    }

    /// Money round-trips through JSON, and its display for people is exact to the minor unit,
    /// i64's extremes included.
    #[test]
    fn money_round_trips_and_displays_exactly(amount in any::<i64>(), code in "[A-Z]{3}") {
        let money = Money { amount, currency: code.parse().unwrap() };
        let json = serde_json::to_string(&money).unwrap();
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);

        let shown = money.to_string();
        let (number, shown_code) = shown.split_once(' ').unwrap();
        prop_assert_eq!(shown_code, code.as_str());
        let digits: String = number.chars().filter(|c| *c != '.').collect();
        prop_assert_eq!(digits.parse::<i128>().unwrap(), i128::from(amount), "{}", shown);
        let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
        prop_assert_eq!(decimals as u32, money.currency.exponent());
    }

    /// Whatever JSON a client or a producer sends as money is decoded or refused.
    #[test]
    fn money_from_any_json_is_decoded_or_refused(json in json_value()) {
        let _ = serde_json::from_value::<Money>(json.clone());
        let _ = serde_json::from_str::<Money>(&json.to_string());
    }

    /// Arbitrary bytes on the bus: refused as an envelope, or refused as the contract, never a
    /// panic.
    #[test]
    fn any_bytes_are_an_envelope_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(envelope) = serde_json::from_slice::<Envelope<serde_json::Value>>(&bytes) {
            let _ = envelope.decode::<UserLocked>();
        }
    }

    /// A real envelope with one byte changed anywhere: decoded (to the same contract, or
    /// refused as it), never a panic.
    #[test]
    fn an_envelope_with_any_byte_changed_is_decoded_or_refused(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let sent = Envelope::new(
            "auth",
            UserLocked { user_id: uuid::Uuid::from_u128(7), until: chrono::Utc::now(), failed_attempts: 5 },
        );
        let mut bytes = serde_json::to_vec(&sent.into_json()).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(envelope) = serde_json::from_slice::<Envelope<serde_json::Value>>(&bytes) {
            let _ = envelope.decode::<UserLocked>();
        }
    }

    /// Any JSON in an envelope's `data` is decoded as the contract or refused.
    #[test]
    fn any_payload_is_the_contract_or_an_error(data in json_value()) {
        let mut envelope = Envelope::new(
            "auth",
            UserLocked { user_id: uuid::Uuid::nil(), until: chrono::Utc::now(), failed_attempts: 5 },
        )
        .into_json();
        envelope.data = data;
        let _ = envelope.decode::<UserLocked>();
    }

    /// What a producer encodes, a consumer decodes to the same message.
    #[test]
    fn an_encoded_envelope_decodes_to_itself(
        id in any::<u128>(),
        seconds in 0i64..4_102_444_800,
        failed_attempts in any::<u32>(),
        source in "[a-z]{1,12}",
    ) {
        let event = UserLocked {
            user_id: uuid::Uuid::from_u128(id),
            until: chrono::DateTime::from_timestamp(seconds, 0).unwrap(),
            failed_attempts,
        };
        let sent = Envelope::new(source, event);
        let bytes = serde_json::to_vec(&sent.clone().into_json()).unwrap();
        let received = serde_json::from_slice::<Envelope<serde_json::Value>>(&bytes)
            .unwrap()
            .decode::<UserLocked>()
            .unwrap();
        prop_assert_eq!(received, sent);
    }
}

/// JSON values of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
