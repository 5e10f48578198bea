//! The published form of every contract: `tests/contracts/<type>.v<version>.json` holds one
//! envelope per contract. Each test decodes the fixture as the contract and re-encodes it; a
//! renamed or retyped field fails here, not in a consumer. New contracts get a fixture from a separate
//! command, `cargo run -p tienda-events --example bless_contracts` (then review and commit
//! it); a test run never writes one, so a fixture cannot agree with the code by construction.

use pretty_assertions::assert_eq;
use serde_json::Value;
use tienda_events::{Envelope, Message, inventory::*, order::*, payment::*, user::*};

mod samples;

use samples::{Visit, at, fixture_path, id, lines, sample};

/// Compares each sample with its committed fixture.
struct Checker;

impl Visit for Checker {
    fn check<T: Message + PartialEq + std::fmt::Debug>(&mut self, data: T) {
        check(data);
    }
}

fn check<T: Message + PartialEq + std::fmt::Debug>(data: T) {
    let path = fixture_path::<T>();
    let expected = serde_json::to_value(sample(data)).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (a new contract: write its fixture with `cargo run -p tienda-events --example bless_contracts`, then review and commit it)", path.display()));
    let published: Value = serde_json::from_str(&text).unwrap();

    // The fixture decodes as the contract and re-encodes to the same JSON.
    let raw: Envelope<Value> = serde_json::from_value(published.clone()).unwrap();
    let decoded = raw.decode::<T>().unwrap();
    assert_eq!(
        serde_json::to_value(&decoded).unwrap(),
        published,
        "{}",
        path.display()
    );
    assert_eq!(
        published,
        expected,
        "{} differs from the contract",
        path.display()
    );

    // Tolerant reader: a field added by a newer producer does not break this consumer.
    let mut newer = published.clone();
    newer["data"]["added_in_a_later_release"] = Value::from(42);
    newer["added_to_the_envelope"] = Value::from(true);
    let raw: Envelope<Value> = serde_json::from_value(newer).unwrap();
    assert_eq!(raw.decode::<T>().unwrap().data, decoded.data);
}

#[test]
fn user_contracts_match_their_fixtures() {
    samples::user(&mut Checker);
}

#[test]
fn catalog_contracts_match_their_fixtures() {
    samples::catalog(&mut Checker);
}

#[test]
fn inventory_contracts_match_their_fixtures() {
    samples::inventory(&mut Checker);
}

#[test]
fn order_contracts_match_their_fixtures() {
    samples::order(&mut Checker);
}

#[test]
fn payment_contracts_match_their_fixtures() {
    samples::payment(&mut Checker);
}

#[test]
fn subjects_follow_the_domain_convention() {
    assert_eq!(UserRegistered::subject(), "tienda.user.registered");
    assert_eq!(InventoryReserved::subject(), "tienda.inventory.reserved");
    assert_eq!(ReserveInventory::subject(), "tienda.inventory.cmd.reserve");
    assert_eq!(ReserveInventory::message_type(), "inventory.cmd.reserve");
    assert_eq!(AuthorizePayment::subject(), "tienda.payment.cmd.authorize");
    assert_eq!(
        PaymentRequiresAction::subject(),
        "tienda.payment.requires_action"
    );
    assert_eq!(OrderPlaced::subject(), "tienda.order.placed");
}

/// The durable consumers filter events with `tienda.<domain>.*` (one token) and commands with
/// `tienda.<domain>.cmd.>`: an event subject has three tokens, a command's four.
#[test]
fn every_saga_subject_fits_the_consumers_filters() {
    fn tokens<T: Message>() -> (usize, String) {
        let subject = T::subject();
        (subject.split('.').count(), subject)
    }
    let events = [
        tokens::<OrderPlaced>(),
        tokens::<OrderConfirmed>(),
        tokens::<OrderCancelled>(),
        tokens::<OrderShipped>(),
        tokens::<OrderDelivered>(),
        tokens::<OrderRefunded>(),
        tokens::<PaymentAuthorized>(),
        tokens::<PaymentRequiresAction>(),
        tokens::<PaymentDeclined>(),
        tokens::<PaymentCaptured>(),
        tokens::<PaymentVoided>(),
        tokens::<PaymentReviewRejected>(),
        tokens::<PaymentRefunded>(),
        tokens::<PaymentFailed>(),
        tokens::<InventoryReserved>(),
        tokens::<InventoryReservationFailed>(),
        tokens::<InventoryCommitted>(),
        tokens::<InventoryReleased>(),
        tokens::<InventoryRestocked>(),
    ];
    for (count, subject) in events {
        assert_eq!(count, 3, "{subject} is an event: tienda.<domain>.<event>");
    }
    let commands = [
        tokens::<AuthorizePayment>(),
        tokens::<CapturePayment>(),
        tokens::<VoidPayment>(),
        tokens::<RefundPayment>(),
        tokens::<ReserveInventory>(),
        tokens::<CommitReservation>(),
        tokens::<ReleaseReservation>(),
        tokens::<RestockInventory>(),
    ];
    for (count, subject) in commands {
        assert_eq!(count, 4, "{subject} is a command");
        assert_eq!(subject.split('.').nth(2), Some("cmd"), "{subject}");
    }
}

#[test]
fn a_new_envelope_starts_a_chain_and_a_caused_one_continues_it() {
    let first = Envelope::new(
        "orders",
        ReserveInventory {
            reservation_id: id(4),
            order_id: None,
            items: lines(),
            ttl_seconds: 60,
        },
    );
    assert_eq!(first.id.get_version_num(), 7, "ids are UUIDv7");
    assert_eq!(first.correlation_id, first.id);
    assert_eq!(first.causation_id, None);
    assert_eq!(first.aggregate_id, id(4).to_string());

    let reply = Envelope::caused_by(
        "products",
        CommitReservation {
            reservation_id: id(4),
        },
        &first,
    );
    assert_eq!(reply.correlation_id, first.id);
    assert_eq!(reply.causation_id, Some(first.id));
    assert_ne!(reply.id, first.id);
    assert!(reply.id > first.id, "UUIDv7 ids sort by creation");
}

#[test]
fn decoding_as_the_wrong_contract_or_version_is_refused() {
    let envelope = Envelope::new(
        "auth",
        UserLocked {
            user_id: id(1),
            until: at(1),
            failed_attempts: 3,
        },
    )
    .into_json();
    let err = envelope.clone().decode::<UserRegistered>().unwrap_err();
    assert!(
        err.to_string()
            .contains("expected user.registered v1, got user.locked v1"),
        "{err}"
    );

    let mut newer = envelope;
    newer.version = 2;
    assert!(newer.decode::<UserLocked>().is_err());
}

#[test]
fn a_payload_missing_a_required_field_is_refused() {
    let mut envelope = Envelope::new(
        "auth",
        UserLocked {
            user_id: id(1),
            until: at(1),
            failed_attempts: 3,
        },
    )
    .into_json();
    envelope.data.as_object_mut().unwrap().remove("until");
    let err = envelope.decode::<UserLocked>().unwrap_err();
    assert!(err.to_string().contains("until"), "{err}");
}
