//! The published form of every contract: `tests/contracts/<type>.v<version>.json` holds one
//! envelope per contract. Each test decodes the fixture as the contract and re-encodes it; a
//! renamed or retyped field fails here, not in a consumer. New contracts get a fixture with
//! `TIENDA_BLESS=1 cargo test -p tienda-events` (then review and commit it).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use pretty_assertions::assert_eq;
use serde_json::Value;
use tienda_events::{
    Envelope, Message, Money,
    catalog::{ProductCreated, ProductDeleted, ProductStatus, ProductUpdated, VariantSummary},
    inventory::*,
    order::*,
    payment::*,
    user::*,
};
use uuid::Uuid;

fn fixture_path<T: Message>() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/contracts")
        .join(format!("{}.v{}.json", T::message_type(), T::VERSION))
}

fn sample<T: Message>(data: T) -> Envelope<T> {
    let mut envelope = Envelope::new("example", data);
    envelope.id = Uuid::parse_str("01932c07-a5f0-7c3e-9a53-0c0ffee00001").unwrap();
    envelope.correlation_id = Uuid::parse_str("01932c07-a5f0-7c3e-9a53-0c0ffee00000").unwrap();
    envelope.causation_id = Some(envelope.correlation_id);
    envelope.time = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
    envelope
}

fn check<T: Message + PartialEq + std::fmt::Debug>(data: T) {
    let path = fixture_path::<T>();
    let expected = serde_json::to_value(sample(data)).unwrap();
    if std::env::var_os("TIENDA_BLESS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with TIENDA_BLESS=1)", path.display()));
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

fn id(n: u8) -> Uuid {
    Uuid::parse_str(&format!("01932c07-a5f0-7c3e-9a53-0000000000{n:02x}")).unwrap()
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".parse().unwrap(),
    }
}

fn at(hour: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, hour, 0, 0).unwrap()
}

fn lines() -> Vec<Line> {
    vec![
        Line {
            sku: "TEE-BLK-M".into(),
            quantity: 2,
        },
        Line {
            sku: "MUG-01".into(),
            quantity: 1,
        },
    ]
}

#[test]
fn user_contracts_match_their_fixtures() {
    check(UserRegistered {
        user_id: id(1),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        roles: vec!["customer".into()],
    });
    check(UserPasswordResetRequested {
        user_id: id(1),
        email: "ada@example.com".into(),
        token: "q8p1n3-reset-token".into(),
        expires_at: at(13),
    });
    check(UserLocked {
        user_id: id(1),
        until: at(12),
        failed_attempts: 5,
    });
    check(UserRolesChanged {
        user_id: id(1),
        roles: vec!["customer".into(), "support".into()],
        changed_by: id(2),
    });
}

#[test]
fn catalog_contracts_match_their_fixtures() {
    let variants = vec![VariantSummary {
        sku: "TEE-BLK-M".into(),
        price: eur(1999),
    }];
    check(ProductCreated {
        product_id: id(3),
        name: "Black tee".into(),
        status: ProductStatus::Active,
        variants: variants.clone(),
    });
    check(ProductUpdated {
        product_id: id(3),
        version: 2,
        status: ProductStatus::Archived,
        variants,
    });
    check(ProductDeleted { product_id: id(3) });
}

#[test]
fn inventory_contracts_match_their_fixtures() {
    check(ReserveInventory {
        reservation_id: id(4),
        order_id: Some(id(5)),
        items: lines(),
        ttl_seconds: 900,
    });
    check(CommitReservation {
        reservation_id: id(4),
    });
    check(ReleaseReservation {
        reservation_id: id(4),
    });
    check(InventoryReserved {
        reservation_id: id(4),
        order_id: Some(id(5)),
        items: lines(),
        expires_at: at(12),
    });
    check(InventoryReservationFailed {
        reservation_id: id(4),
        order_id: None,
        shortages: vec![Shortage {
            sku: "MUG-01".into(),
            requested: 1,
            available: 0,
        }],
    });
    check(InventoryCommitted {
        reservation_id: id(4),
        items: lines(),
    });
    check(InventoryReleased {
        reservation_id: id(4),
        items: lines(),
        reason: ReleaseReason::Expired,
    });
    check(RestockInventory {
        restock_id: id(6),
        order_id: Some(id(5)),
        items: lines(),
        reason: "order cancelled before shipping".into(),
    });
    check(InventoryRestocked {
        restock_id: id(6),
        order_id: Some(id(5)),
        items: lines(),
    });
    check(InventoryAdjusted {
        sku: "MUG-01".into(),
        on_hand: 40,
        delta: -2,
        reason: "damaged in storage".into(),
    });
    check(InventoryLowStock {
        sku: "MUG-01".into(),
        available: 3,
        threshold: 5,
    });
}

fn order_lines() -> Vec<OrderLine> {
    vec![
        OrderLine {
            sku: "TEE-BLK-M".into(),
            name: "Camiseta negra".into(),
            quantity: 2,
            unit_price: eur(1999),
        },
        OrderLine {
            sku: "MUG-01".into(),
            name: "Taza".into(),
            quantity: 1,
            unit_price: eur(900),
        },
    ]
}

#[test]
fn order_contracts_match_their_fixtures() {
    check(OrderPlaced {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        items: order_lines(),
        total: eur(4898),
    });
    check(OrderConfirmed {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        items: order_lines(),
        total: eur(4898),
        payment_id: id(6),
    });
    check(OrderCancelled {
        order_id: id(5),
        customer_id: None,
        email: "guest@example.com".into(),
        reason: CancelReason::OutOfStock,
        detail: "MUG-01 is out of stock (1 asked, 0 left).".into(),
    });
    check(OrderShipped {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: "PQ4BA20123456".into(),
    });
    check(OrderDelivered {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        delivered_at: at(15),
    });
    check(OrderRefunded {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        amount: eur(900),
        refunded_total: eur(900),
        full: false,
    });
}

#[test]
fn payment_contracts_match_their_fixtures() {
    check(AuthorizePayment {
        payment_id: id(6),
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        amount: eur(4898),
        payment_method: "pm_card_visa".into(),
        client_ip: Some("203.0.113.7".into()),
        billing_country: Some("ES".into()),
        deadline: at(12),
    });
    // Without invoice details: the shape v1 producers sent before they were added.
    check(CapturePayment {
        payment_id: id(6),
        order_id: id(5),
        amount: Some(eur(3998)),
        deadline: at(12),
        invoice: None,
    });
    check(VoidPayment {
        payment_id: id(6),
        order_id: id(5),
        deadline: at(12),
    });
    check(RefundPayment {
        refund_id: id(7),
        payment_id: id(6),
        order_id: id(5),
        amount: eur(900),
        reason: "returned: MUG-01".into(),
        deadline: at(12),
    });
    check(PaymentAuthorized {
        payment_id: id(6),
        order_id: id(5),
        amount: eur(4898),
        provider: "sandbox".into(),
    });
    check(PaymentRequiresAction {
        payment_id: id(6),
        order_id: id(5),
        action_url: "https://pay.example.com/3ds/01932c07".into(),
        expires_at: at(13),
    });
    check(PaymentDeclined {
        payment_id: id(6),
        order_id: id(5),
        code: "insufficient_funds".into(),
        message: "The card has insufficient funds.".into(),
    });
    check(PaymentCaptured {
        payment_id: id(6),
        order_id: id(5),
        amount: eur(3998),
    });
    check(PaymentVoided {
        payment_id: id(6),
        order_id: id(5),
    });
    check(PaymentReviewRejected {
        payment_id: id(6),
        order_id: id(5),
        reviewed_by: "01932c07-a5f0-7c3e-9a53-00000000000a".into(),
        note: Some("Card reported stolen by its owner".into()),
    });
    check(PaymentRefunded {
        refund_id: id(7),
        payment_id: id(6),
        order_id: id(5),
        amount: eur(900),
        refunded_total: eur(900),
    });
    check(PaymentFailed {
        payment_id: id(6),
        order_id: id(5),
        refund_id: None,
        operation: PaymentOperation::Capture,
        retryable: true,
        expired: false,
        detail: "stripe: the circuit is open; retry after 30 s".into(),
    });
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
