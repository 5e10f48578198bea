//! The saga driven by scripted replies: inventory and payment events published onto their
//! streams as products and payments would.

use chrono::Utc;
use pretty_assertions::assert_eq;
use serde_json::Value;
use tienda_events::{
    Envelope, Money,
    inventory::{InventoryReservationFailed, InventoryReserved, Line, Shortage},
    payment::{PaymentAuthorized, PaymentDeclined},
};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn uuid(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".parse().unwrap(),
    }
}

/// Inventory's `reserved` answer to the order's reserve command.
async fn reserved(app: &TestApp, reserve: &Envelope<Value>) -> Uuid {
    let event = InventoryReserved {
        reservation_id: uuid(&reserve.data["reservation_id"]),
        order_id: Some(reserve.correlation_id),
        items: vec![Line {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
        expires_at: Utc::now() + chrono::Duration::minutes(15),
    };
    app.reply("products", event, reserve).await
}

/// Payments' `authorized` answer to the authorize command.
async fn authorized(app: &TestApp, authorize: &Envelope<Value>) -> Uuid {
    let event = PaymentAuthorized {
        payment_id: uuid(&authorize.data["payment_id"]),
        order_id: authorize.correlation_id,
        amount: eur(authorize.data["amount"]["amount"].as_i64().unwrap()),
        provider: "sandbox".into(),
    };
    app.reply("payments", event, authorize).await
}

async fn declined(app: &TestApp, authorize: &Envelope<Value>) -> Uuid {
    let event = PaymentDeclined {
        payment_id: uuid(&authorize.data["payment_id"]),
        order_id: authorize.correlation_id,
        code: "card_declined".into(),
        message: "Your card was declined.".into(),
    };
    app.reply("payments", event, authorize).await
}

/// Outbox rows on `subject` about `order_id`.
async fn sent(app: &TestApp, subject: &str, order_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM tienda_outbox WHERE subject = $1 \
         AND payload->>'correlation_id' = $2",
    )
    .bind(subject)
    .bind(order_id.to_string())
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn reserved_then_authorized_confirms_the_order_and_commits_the_stock() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;

    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    authorized(&app, &authorize).await;
    let order = app.wait_for_status(id, "confirmed").await;

    assert_eq!(authorize.data["order_id"], id.to_string());
    assert_eq!(authorize.data["amount"]["amount"], 1250);
    assert_eq!(authorize.data["payment_method"], "pm_card_visa");
    assert!(authorize.data["deadline"].is_string());
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    assert_eq!(
        commit.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    assert_eq!(commit.correlation_id, id);
    let confirmed = app.bus.expect("tienda.order.confirmed", id).await;
    assert_eq!(confirmed.data["payment_id"], authorize.data["payment_id"]);
    assert_eq!(order["cancellation"], Value::Null);
    assert_eq!(
        app.log(id).await,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed"
        ]
    );
}

#[tokio::test]
async fn out_of_stock_cancels_the_order_naming_the_sku_and_asks_for_no_payment() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 3).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;

    let failed = InventoryReservationFailed {
        reservation_id: uuid(&reserve.data["reservation_id"]),
        order_id: Some(id),
        shortages: vec![Shortage {
            sku: "MUG-1".into(),
            requested: 3,
            available: 1,
        }],
    };
    app.reply("products", failed, &reserve).await;
    let order = app.wait_for_status(id, "cancelled").await;

    assert_eq!(order["cancellation"]["reason"], "out_of_stock");
    assert!(
        order["cancellation"]["detail"]
            .as_str()
            .unwrap()
            .contains("MUG-1")
    );
    let cancelled = app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(cancelled.data["reason"], "out_of_stock");
    assert_eq!(sent(&app, "tienda.payment.cmd.authorize", id).await, 0);
    assert_eq!(sent(&app, "tienda.inventory.cmd.release", id).await, 0);
}

#[tokio::test]
async fn a_declined_payment_releases_the_stock_and_cancels_the_order() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;

    declined(&app, &authorize).await;
    let order = app.wait_for_status(id, "cancelled").await;

    assert_eq!(order["cancellation"]["reason"], "payment_declined");
    let release = app.bus.expect("tienda.inventory.cmd.release", id).await;
    assert_eq!(
        release.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(sent(&app, "tienda.inventory.cmd.commit", id).await, 0);
}

#[tokio::test]
async fn an_unanswered_authorization_times_out_releases_the_stock_and_cancels() {
    let app = spawn_app_with(&["--authorize-timeout-ms=200"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    app.bus.expect("tienda.payment.cmd.authorize", id).await;

    let order = app.wait_for_status(id, "cancelled").await;

    assert_eq!(order["cancellation"]["reason"], "timed_out");
    let release = app.bus.expect("tienda.inventory.cmd.release", id).await;
    assert_eq!(
        release.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    let cancelled = app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(cancelled.data["reason"], "timed_out");
}

#[tokio::test]
async fn an_unanswered_reservation_times_out_and_a_late_reserved_is_released() {
    let app = spawn_app_with(&["--reserve-timeout-ms=200"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    let order = app.wait_for_status(id, "cancelled").await;
    assert_eq!(order["cancellation"]["reason"], "timed_out");

    let late = reserved(&app, &reserve).await;
    app.handled("orders-inventory-events", late).await;

    let release = app.bus.expect("tienda.inventory.cmd.release", id).await;
    assert_eq!(
        release.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    assert_eq!(release.causation_id, Some(late));
    assert_eq!(app.order(id).await["status"], "cancelled");
    assert_eq!(sent(&app, "tienda.payment.cmd.authorize", id).await, 0);
}

#[tokio::test]
async fn a_late_authorization_after_cancellation_is_voided_and_the_order_stays_cancelled() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    declined(&app, &authorize).await;
    app.wait_for_status(id, "cancelled").await;

    let late = authorized(&app, &authorize).await;
    app.handled("orders-payment-events", late).await;

    let void = app.bus.expect("tienda.payment.cmd.void", id).await;
    assert_eq!(void.data["payment_id"], authorize.data["payment_id"]);
    assert_eq!(void.correlation_id, id);
    let order = app.order(id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancellation"]["reason"], "payment_declined");
    assert_eq!(sent(&app, "tienda.inventory.cmd.commit", id).await, 0);
    assert_eq!(sent(&app, "tienda.order.confirmed", id).await, 0);
    assert_eq!(app.log(id).await.last().unwrap(), "late_reply_compensated");
}

#[tokio::test]
async fn duplicate_replies_change_nothing_twice() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    // Inventory restating its answer to a repeated command: a new message, the same fact.
    let again = reserved(&app, &reserve).await;
    app.handled("orders-inventory-events", again).await;
    authorized(&app, &authorize).await;
    app.wait_for_status(id, "confirmed").await;

    let restated = authorized(&app, &authorize).await;
    app.handled("orders-payment-events", restated).await;
    // The very same message again: the stream's de-duplication or the inbox drops it.
    let mut same = Envelope::new(
        "payments",
        PaymentAuthorized {
            payment_id: uuid(&authorize.data["payment_id"]),
            order_id: id,
            amount: eur(1250),
            provider: "sandbox".into(),
        },
    );
    same.correlation_id = id;
    let copy = same.clone();
    app.publish(same).await;
    let copy_id = app.publish(copy).await;
    app.handled("orders-payment-events", copy_id).await;

    assert_eq!(app.order(id).await["status"], "confirmed");
    assert_eq!(sent(&app, "tienda.payment.cmd.authorize", id).await, 1);
    assert_eq!(sent(&app, "tienda.inventory.cmd.commit", id).await, 1);
    assert_eq!(sent(&app, "tienda.order.confirmed", id).await, 1);
    assert_eq!(sent(&app, "tienda.payment.cmd.void", id).await, 0);
    assert_eq!(
        app.log(id).await,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed"
        ]
    );
}
