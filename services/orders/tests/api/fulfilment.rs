//! Cancelling, shipping and delivering orders: the customer's and the admin's side.

use chrono::Utc;
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{
    Envelope, Money,
    inventory::{
        InventoryCommitted, InventoryReleased, InventoryReserved, InventoryRestocked, Line,
        ReleaseReason,
    },
    payment::{PaymentAuthorized, PaymentVoided},
};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

pub(crate) fn uuid(value: &Value) -> Uuid {
    value.as_str().unwrap().parse().unwrap()
}

pub(crate) fn mug() -> Vec<Line> {
    vec![Line {
        sku: "MUG-1".into(),
        quantity: 1,
    }]
}

/// An order placed and reserved by inventory (the authorization asked); returns its id.
pub(crate) async fn reserved_order(app: &TestApp) -> Uuid {
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    let event = InventoryReserved {
        reservation_id: uuid(&reserve.data["reservation_id"]),
        order_id: Some(id),
        items: mug(),
        expires_at: Utc::now() + chrono::Duration::minutes(15),
    };
    app.reply("products", event, &reserve).await;
    app.wait_for_status(id, "reserved").await;
    app.bus.expect("tienda.payment.cmd.authorize", id).await;
    id
}

/// An order driven through the saga to `confirmed`; returns its id.
pub(crate) async fn confirmed_order(app: &TestApp) -> Uuid {
    let id = reserved_order(app).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    let event = PaymentAuthorized {
        payment_id: uuid(&authorize.data["payment_id"]),
        order_id: id,
        amount: Money {
            amount: 1250,
            currency: "EUR".parse().unwrap(),
        },
        provider: "sandbox".into(),
    };
    app.reply("payments", event, &authorize).await;
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    let event = InventoryCommitted {
        reservation_id: uuid(&commit.data["reservation_id"]),
        items: mug(),
    };
    app.reply("products", event, &commit).await;
    app.wait_for_status(id, "confirmed").await;
    id
}

async fn post(
    app: &TestApp,
    id: Uuid,
    action: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let response = app
        .send(
            Method::POST,
            &format!("/v1/orders/{id}/{action}"),
            Some(token),
            None,
            body,
        )
        .await;
    let status = response.status();
    if status.is_client_error() {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    (status, response.json().await.unwrap())
}

fn shipment() -> Value {
    json!({"carrier": "SEUR", "tracking_number": "ES-123456789"})
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
async fn a_customer_cancels_a_confirmed_order_its_payment_is_voided_and_order_cancelled_published()
{
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;

    let (status, order) = post(&app, id, "cancel", &app.customer, None).await;

    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancellation"]["reason"], "customer_requested");
    let void = app.bus.expect("tienda.payment.cmd.void", id).await;
    assert_eq!(void.data["payment_id"], authorize.data["payment_id"]);
    let cancelled = app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(cancelled.data["reason"], "customer_requested");
    assert_eq!(cancelled.data["customer_id"], crate::helpers::CUSTOMER);
    // The stock is committed (sold): there is no reservation left to release, but the sold
    // units never left the warehouse: they are put back.
    assert_eq!(sent(&app, "tienda.inventory.cmd.release", id).await, 0);
    let restock = app.bus.expect("tienda.inventory.cmd.restock", id).await;
    assert_eq!(
        restock.data["items"],
        serde_json::json!([{"sku": "MUG-1", "quantity": 1}])
    );
    assert_eq!(app.saga(id).await, ("compensating".to_owned(), true));

    let done = app
        .reply(
            "payments",
            PaymentVoided {
                payment_id: uuid(&void.data["payment_id"]),
                order_id: id,
            },
            &void,
        )
        .await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;
    assert_eq!(
        app.saga(id).await,
        ("compensating".to_owned(), true),
        "the restock is still unanswered"
    );
    let restocked = InventoryRestocked {
        restock_id: uuid(&restock.data["restock_id"]),
        order_id: Some(id),
        items: mug(),
    };
    let done = app.reply("products", restocked, &restock).await;
    app.handled(tienda_orders::INVENTORY_CONSUMER, done).await;
    assert_eq!(app.saga(id).await, ("compensated".to_owned(), false));
    assert_eq!(
        app.log(id).await,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed",
            "cancelled",
            "payment_voided",
            "stock_restocked"
        ]
    );
}

#[tokio::test]
async fn a_customer_cancels_a_reserved_order_releasing_the_stock_and_voiding_the_payment() {
    let app = spawn_app().await;
    let id = reserved_order(&app).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;

    let (status, order) = post(&app, id, "cancel", &app.customer, None).await;

    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "cancelled");
    let release = app.bus.expect("tienda.inventory.cmd.release", id).await;
    assert_eq!(
        release.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    app.bus.expect("tienda.payment.cmd.void", id).await;
    app.bus.expect("tienda.order.cancelled", id).await;
    let event = InventoryReleased {
        reservation_id: uuid(&release.data["reservation_id"]),
        items: mug(),
        reason: ReleaseReason::Requested,
    };
    let done = app.reply("products", event, &release).await;
    app.handled(tienda_orders::INVENTORY_CONSUMER, done).await;
    assert!(app.log(id).await.contains(&"stock_released".to_owned()));
}

#[tokio::test]
async fn a_customer_cannot_cancel_after_the_window_but_an_admin_can() {
    let app = spawn_app_with(&["--cancel-window-seconds=0"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;

    let (status, problem) = post(&app, id, "cancel", &app.customer, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("cancel"),
        "{problem}"
    );
    assert_eq!(app.order(id).await["status"], "pending");

    let (status, order) = post(&app, id, "cancel", &app.admin, None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["cancellation"]["reason"], "admin_requested");
    let cancelled = app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(cancelled.data["reason"], "admin_requested");
    // Nothing was known to be held yet.
    assert_eq!(sent(&app, "tienda.inventory.cmd.release", id).await, 0);
    assert_eq!(sent(&app, "tienda.payment.cmd.void", id).await, 0);
}

#[tokio::test]
async fn another_customer_cancelling_my_order_finds_nothing_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;

    let (status, _) = post(&app, id, "cancel", &app.other_customer, None).await;
    let (garbage, _) = post(&app, Uuid::now_v7(), "cancel", &app.customer, None).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(garbage, StatusCode::NOT_FOUND);
    assert_eq!(app.order(id).await["status"], "pending");
    assert_eq!(sent(&app, "tienda.order.cancelled", id).await, 0);
}

#[tokio::test]
async fn an_admin_ships_and_delivers_a_confirmed_order_publishing_both_events() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;

    let (status, order) = post(&app, id, "ship", &app.admin, Some(&shipment())).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "shipped");
    assert_eq!(order["shipment"]["carrier"], "SEUR");
    assert_eq!(order["shipment"]["tracking_number"], "ES-123456789");
    assert!(order["shipment"]["shipped_at"].is_string());
    assert!(order["shipment"].get("delivered_at").is_none());
    app.bus.expect("tienda.order.shipped", id).await;
    let stream = app.js.get_stream("ORDER").await.unwrap();
    let stored = stream
        .get_last_raw_message_by_subject("tienda.order.shipped")
        .await
        .unwrap();
    let shipped: Envelope<Value> = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(shipped.correlation_id, id);
    assert_eq!(shipped.data["order_id"], id.to_string());
    assert_eq!(shipped.data["carrier"], "SEUR");
    assert_eq!(shipped.data["tracking_number"], "ES-123456789");
    assert_eq!(shipped.data["email"], "ana@example.com");

    // Shipped: too late for the customer to cancel.
    let (status, problem) = post(&app, id, "cancel", &app.customer, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["status"], "shipped");

    let (status, order) = post(&app, id, "deliver", &app.admin, None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "delivered");
    let delivered = app.bus.expect("tienda.order.delivered", id).await;
    assert!(delivered.data["delivered_at"].is_string());
    let read = app.order(id).await;
    assert_eq!(read["status"], "delivered");
    assert_eq!(read["shipment"]["carrier"], "SEUR", "{read}");
    assert!(read["shipment"]["delivered_at"].is_string(), "{read}");

    // Delivered: not even an admin cancels it.
    let (status, _) = post(&app, id, "cancel", &app.admin, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let log = app.log(id).await;
    assert_eq!(log[log.len() - 2..], ["shipped", "delivered"]);
}

#[tokio::test]
async fn shipping_a_pending_or_cancelled_order_or_delivering_an_unshipped_one_is_a_conflict() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;

    let (pending, problem) = post(&app, id, "ship", &app.admin, Some(&shipment())).await;
    assert_eq!(pending, StatusCode::CONFLICT);
    assert_eq!(problem["status"], "pending");
    let (unshipped, _) = post(&app, id, "deliver", &app.admin, None).await;
    assert_eq!(unshipped, StatusCode::CONFLICT);

    let (status, _) = post(&app, id, "cancel", &app.customer, None).await;
    assert_eq!(status, StatusCode::OK);
    let (cancelled, problem) = post(&app, id, "ship", &app.admin, Some(&shipment())).await;
    assert_eq!(cancelled, StatusCode::CONFLICT);
    assert_eq!(problem["status"], "cancelled");
    assert_eq!(sent(&app, "tienda.order.shipped", id).await, 0);
}

#[tokio::test]
async fn a_customer_may_not_ship_or_deliver_and_bad_shipments_name_the_field() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;

    let (ship, _) = post(&app, id, "ship", &app.customer, Some(&shipment())).await;
    let (deliver, _) = post(&app, id, "deliver", &app.customer, None).await;
    assert_eq!(ship, StatusCode::FORBIDDEN);
    assert_eq!(deliver, StatusCode::FORBIDDEN);

    let bad = json!({"carrier": "SE\u{7}UR", "tracking_number": ""});
    let (status, problem) = post(&app, id, "ship", &app.admin, Some(&bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let text = problem.to_string();
    assert!(
        text.contains("carrier") && text.contains("tracking_number"),
        "{text}"
    );
    let unknown = json!({"carrier": "SEUR", "tracking_number": "1", "eta": "soon"});
    let (status, problem) = post(&app, id, "ship", &app.admin, Some(&unknown)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem.to_string().contains("eta"), "{problem}");
    assert_eq!(app.order(id).await["status"], "confirmed");
}

#[tokio::test]
async fn a_payment_rejected_in_fraud_review_cancels_its_order_as_an_admin_would() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    let payment_id = uuid(&authorize.data["payment_id"]);

    let rejected = tienda_events::payment::PaymentReviewRejected {
        payment_id,
        order_id: id,
        reviewed_by: "an-admin".into(),
        note: Some("Card reported stolen".into()),
    };
    let done = app.reply("payments", rejected.clone(), &authorize).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;

    let order = app.wait_for_status(id, "cancelled").await;
    assert_eq!(order["cancellation"]["reason"], "admin_requested");
    let void = app.bus.expect("tienda.payment.cmd.void", id).await;
    assert_eq!(void.data["payment_id"], authorize.data["payment_id"]);
    app.bus.expect("tienda.inventory.cmd.restock", id).await;
    let cancelled = app.bus.expect("tienda.order.cancelled", id).await;
    assert_eq!(cancelled.data["reason"], "admin_requested");

    // Told again (a redelivery past deduplication): the order is cancelled once.
    let again = app.reply("payments", rejected, &authorize).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, again).await;
    assert_eq!(sent(&app, "tienda.order.cancelled", id).await, 1);
    assert_eq!(sent(&app, "tienda.payment.cmd.void", id).await, 1);
}
