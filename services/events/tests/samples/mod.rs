//! One sample of every published contract, shared by the contract tests (which compare each
//! with its fixture) and `cargo run -p tienda-events --example bless_contracts` (which writes
//! the fixture of a new contract). Kept apart so that no test run ever writes a fixture.

#![allow(dead_code)] // each includer uses part of it

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use tienda_events::{
    Envelope, Message, Money,
    catalog::{ProductCreated, ProductDeleted, ProductStatus, ProductUpdated, VariantSummary},
    inventory::*,
    order::*,
    payment::*,
    user::*,
};
use uuid::Uuid;

/// What is done with each sample.
pub trait Visit {
    /// Called once per contract with its sample data.
    fn check<T: Message + PartialEq + std::fmt::Debug>(&mut self, data: T);
}

/// Every contract.
pub fn all(v: &mut impl Visit) {
    user(v);
    catalog(v);
    inventory(v);
    order(v);
    payment(v);
}

/// Where a contract's fixture lives: `tests/contracts/<type>.v<version>.json`.
pub fn fixture_path<T: Message>() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/contracts")
        .join(format!("{}.v{}.json", T::message_type(), T::VERSION))
}

pub fn sample<T: Message>(data: T) -> Envelope<T> {
    let mut envelope = Envelope::new("example", data);
    envelope.id = Uuid::parse_str("01932c07-a5f0-7c3e-9a53-0c0ffee00001").unwrap();
    envelope.correlation_id = Uuid::parse_str("01932c07-a5f0-7c3e-9a53-0c0ffee00000").unwrap();
    envelope.causation_id = Some(envelope.correlation_id);
    envelope.time = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
    envelope
}

/// A sample helper.
pub fn id(n: u8) -> Uuid {
    Uuid::parse_str(&format!("01932c07-a5f0-7c3e-9a53-0000000000{n:02x}")).unwrap()
}

/// A sample helper.
pub fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".parse().unwrap(),
    }
}

/// A sample helper.
pub fn at(hour: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, hour, 0, 0).unwrap()
}

/// A sample helper.
pub fn lines() -> Vec<Line> {
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

/// The user contracts.
pub fn user(v: &mut impl Visit) {
    v.check(UserRegistered {
        user_id: id(1),
        email: "ada@example.com".into(),
        name: "Ada".into(),
        roles: vec!["customer".into()],
    });
    v.check(UserPasswordResetRequested {
        user_id: id(1),
        email: "ada@example.com".into(),
        token: "q8p1n3-reset-token".into(),
        expires_at: at(13),
    });
    v.check(UserPasswordResetRequestedV2 {
        user_id: id(1),
        email: "ada@example.com".into(),
        sealed_token: "v1.5f1c2a9b.q8p1n3-sealed".into(),
        expires_at: at(13),
    });
    v.check(UserEmailVerificationRequested {
        user_id: id(1),
        email: "ada@example.com".into(),
        sealed_token: "v1.5f1c2a9b.v3r1fy-sealed".into(),
        expires_at: at(13),
    });
    v.check(UserRegistrationAttempted {
        user_id: id(1),
        email: "ada@example.com".into(),
    });
    v.check(UserSessionsRevoked {
        user_id: id(1),
        session_ids: vec![id(7)],
        reason: "logout".into(),
    });
    v.check(UserLocked {
        user_id: id(1),
        until: at(12),
        failed_attempts: 5,
    });
    v.check(UserRolesChanged {
        user_id: id(1),
        roles: vec!["customer".into(), "support".into()],
        changed_by: id(2),
    });
}

/// The catalog contracts.
pub fn catalog(v: &mut impl Visit) {
    let variants = vec![VariantSummary {
        sku: "TEE-BLK-M".into(),
        price: eur(1999),
    }];
    v.check(ProductCreated {
        product_id: id(3),
        name: "Black tee".into(),
        status: ProductStatus::Active,
        variants: variants.clone(),
    });
    v.check(ProductUpdated {
        product_id: id(3),
        version: 2,
        status: ProductStatus::Archived,
        variants,
    });
    v.check(ProductDeleted { product_id: id(3) });
}

/// The inventory contracts.
pub fn inventory(v: &mut impl Visit) {
    v.check(ReserveInventory {
        reservation_id: id(4),
        order_id: Some(id(5)),
        items: lines(),
        ttl_seconds: 900,
    });
    v.check(CommitReservation {
        reservation_id: id(4),
    });
    v.check(ReleaseReservation {
        reservation_id: id(4),
    });
    v.check(InventoryReserved {
        reservation_id: id(4),
        order_id: Some(id(5)),
        items: lines(),
        expires_at: at(12),
    });
    v.check(InventoryReservationFailed {
        reservation_id: id(4),
        order_id: None,
        shortages: vec![Shortage {
            sku: "MUG-01".into(),
            requested: 1,
            available: 0,
        }],
    });
    v.check(InventoryCommitted {
        reservation_id: id(4),
        items: lines(),
    });
    v.check(InventoryReleased {
        reservation_id: id(4),
        items: lines(),
        reason: ReleaseReason::Expired,
    });
    v.check(RestockInventory {
        restock_id: id(6),
        order_id: Some(id(5)),
        items: lines(),
        reason: "order cancelled before shipping".into(),
    });
    v.check(InventoryRestocked {
        restock_id: id(6),
        order_id: Some(id(5)),
        items: lines(),
    });
    v.check(InventoryAdjusted {
        sku: "MUG-01".into(),
        on_hand: 40,
        delta: -2,
        reason: "damaged in storage".into(),
    });
    v.check(InventoryLowStock {
        sku: "MUG-01".into(),
        available: 3,
        threshold: 5,
    });
}

/// A sample helper.
pub fn order_lines() -> Vec<OrderLine> {
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

/// The order contracts.
pub fn order(v: &mut impl Visit) {
    v.check(OrderPlaced {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        items: order_lines(),
        total: eur(4898),
    });
    v.check(OrderConfirmed {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        items: order_lines(),
        total: eur(4898),
        payment_id: id(6),
    });
    v.check(OrderCancelled {
        order_id: id(5),
        customer_id: None,
        email: "guest@example.com".into(),
        reason: CancelReason::OutOfStock,
        detail: "MUG-01 is out of stock (1 asked, 0 left).".into(),
    });
    v.check(OrderShipped {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: "PQ4BA20123456".into(),
    });
    v.check(OrderDelivered {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        delivered_at: at(15),
    });
    v.check(OrderRefunded {
        order_id: id(5),
        customer_id: Some(id(1)),
        email: "ada@example.com".into(),
        amount: eur(900),
        refunded_total: eur(900),
        full: false,
    });
}

/// The payment contracts.
pub fn payment(v: &mut impl Visit) {
    v.check(AuthorizePayment {
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
    v.check(CapturePayment {
        payment_id: id(6),
        order_id: id(5),
        amount: Some(eur(3998)),
        deadline: at(12),
        invoice: None,
    });
    v.check(VoidPayment {
        payment_id: id(6),
        order_id: id(5),
        deadline: at(12),
    });
    v.check(RefundPayment {
        refund_id: id(7),
        payment_id: id(6),
        order_id: id(5),
        amount: eur(900),
        reason: "returned: MUG-01".into(),
        deadline: at(12),
    });
    v.check(PaymentAuthorized {
        payment_id: id(6),
        order_id: id(5),
        amount: eur(4898),
        provider: "sandbox".into(),
    });
    v.check(PaymentRequiresAction {
        payment_id: id(6),
        order_id: id(5),
        action_url: "https://pay.example.com/3ds/01932c07".into(),
        expires_at: at(13),
    });
    v.check(PaymentDeclined {
        payment_id: id(6),
        order_id: id(5),
        code: "insufficient_funds".into(),
        message: "The card has insufficient funds.".into(),
    });
    v.check(PaymentCaptured {
        payment_id: id(6),
        order_id: id(5),
        amount: eur(3998),
    });
    v.check(PaymentVoided {
        payment_id: id(6),
        order_id: id(5),
    });
    v.check(PaymentReviewRejected {
        payment_id: id(6),
        order_id: id(5),
        reviewed_by: "01932c07-a5f0-7c3e-9a53-00000000000a".into(),
        note: Some("Card reported stolen by its owner".into()),
    });
    v.check(PaymentRefunded {
        refund_id: id(7),
        payment_id: id(6),
        order_id: id(5),
        amount: eur(900),
        refunded_total: eur(900),
    });
    v.check(PaymentFailed {
        payment_id: id(6),
        order_id: id(5),
        refund_id: None,
        operation: PaymentOperation::Capture,
        retryable: true,
        expired: false,
        detail: "stripe: the circuit is open; retry after 30 s".into(),
    });
}
