//! After the sale: capture at shipping, returns restocked and refunded, refunds of orders
//! cancelled after shipping, and money commands re-sent until answered.

use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{
    Envelope, Money,
    inventory::InventoryRestocked,
    payment::{PaymentCaptured, PaymentFailed, PaymentOperation, PaymentRefunded},
};
use uuid::Uuid;

use crate::{
    fulfilment::{confirmed_order, uuid},
    helpers::{TestApp, eventually, spawn_app, spawn_app_with},
};

fn eur(amount: i64) -> Money {
    Money {
        amount,
        currency: "EUR".parse().unwrap(),
    }
}

async fn post(app: &TestApp, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let response = app
        .send(Method::POST, path, Some(token), None, body.as_ref())
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ship(app: &TestApp, id: Uuid) {
    let (status, order) = post(
        app,
        &format!("/v1/orders/{id}/ship"),
        &app.admin,
        Some(json!({"carrier": "SEUR", "tracking_number": "ES-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{order}");
}

/// Answers the order's capture command as payments would.
async fn capture(app: &TestApp, id: Uuid) -> Envelope<Value> {
    let command = app.bus.expect("tienda.payment.cmd.capture", id).await;
    let captured = PaymentCaptured {
        payment_id: uuid(&command.data["payment_id"]),
        order_id: id,
        amount: eur(1250),
    };
    let done = app.reply("payments", captured, &command).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;
    command
}

async fn refund(app: &TestApp, command: &Envelope<Value>, refunded_total: i64) -> Uuid {
    let amount = command.data["amount"]["amount"].as_i64().unwrap();
    let refunded = PaymentRefunded {
        refund_id: uuid(&command.data["refund_id"]),
        payment_id: uuid(&command.data["payment_id"]),
        order_id: command.correlation_id,
        amount: eur(amount),
        refunded_total: eur(refunded_total),
    };
    let done = app.reply("payments", refunded, command).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;
    done
}

#[tokio::test]
async fn shipping_captures_and_a_delivered_order_s_return_is_restocked_and_refunded() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    assert_eq!(app.order(id).await["payment"]["captured"]["amount"], 0);

    ship(&app, id).await;
    let command = capture(&app, id).await;
    assert_eq!(command.data["payment_id"], authorize.data["payment_id"]);
    assert_eq!(
        command.data["amount"],
        json!({"amount": 1250, "currency": "EUR"})
    );
    assert_eq!(app.order(id).await["payment"]["captured"]["amount"], 1250);
    // A duplicate answer changes nothing.
    let again = PaymentCaptured {
        payment_id: uuid(&command.data["payment_id"]),
        order_id: id,
        amount: eur(1250),
    };
    let done = app.reply("payments", again, &command).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;
    let captures = app
        .log(id)
        .await
        .iter()
        .filter(|k| *k == "payment_captured")
        .count();
    assert_eq!(captures, 1);

    let (status, _) = post(&app, &format!("/v1/orders/{id}/deliver"), &app.admin, None).await;
    assert_eq!(status, StatusCode::OK);

    // The customer returns the mug; what cannot be returned is refused, naming it.
    let path = format!("/v1/orders/{id}/returns");
    for (body, field) in [
        (
            json!({"items": [{"sku": "PEN-1", "quantity": 1}], "reason": "x"}),
            "items[0].sku",
        ),
        (
            json!({"items": [{"sku": "MUG-1", "quantity": 2}], "reason": "x"}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"sku": "MUG-1", "quantity": 1}], "reason": " "}),
            "reason",
        ),
        (json!({"items": [], "reason": "x"}), "items"),
    ] {
        let (status, problem) = post(&app, &path, &app.customer, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let body = json!({"items": [{"sku": "MUG-1", "quantity": 1}], "reason": "Chipped on arrival"});
    let (status, _) = post(&app, &path, &app.other_customer, Some(body.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another customer's order");
    let (status, created) = post(&app, &path, &app.customer, Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "requested");
    assert_eq!(
        created["amount"],
        json!({"amount": 1250, "currency": "EUR"})
    );
    let return_id = uuid(&created["id"]);
    let (status, _) = post(&app, &path, &app.customer, Some(body)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the mug is already being returned"
    );

    // The goods arrive: restocked and refunded.
    let receive = format!("/v1/orders/{id}/returns/{return_id}/receive");
    let (status, _) = post(&app, &receive, &app.customer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, received) = post(&app, &receive, &app.admin, None).await;
    assert_eq!(status, StatusCode::OK, "{received}");
    assert_eq!(received["status"], "received");
    let (status, _) = post(&app, &receive, &app.admin, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "received once");
    let restock = app.bus.expect("tienda.inventory.cmd.restock", id).await;
    assert_eq!(restock.data["restock_id"], json!(return_id));
    assert_eq!(
        restock.data["items"],
        json!([{"sku": "MUG-1", "quantity": 1}])
    );
    let refund_command = app.bus.expect("tienda.payment.cmd.refund", id).await;
    assert_eq!(refund_command.data["amount"]["amount"], 1250);
    assert!(
        refund_command.data["reason"]
            .as_str()
            .unwrap()
            .contains("Chipped")
    );
    refund(&app, &refund_command, 1250).await;

    let order = app.order(id).await;
    assert_eq!(order["status"], "refunded");
    assert_eq!(order["payment"]["refunded"]["amount"], 1250);
    let refunded = app.bus.expect("tienda.order.refunded", id).await;
    assert_eq!(refunded.data["full"], true);
    let restocked = InventoryRestocked {
        restock_id: return_id,
        order_id: Some(id),
        items: crate::fulfilment::mug(),
    };
    let done = app.reply("products", restocked, &restock).await;
    app.handled(tienda_orders::INVENTORY_CONSUMER, done).await;
    let listed: Value = app
        .send(Method::GET, &path, Some(&app.customer), None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["status"], "refunded", "{listed}");
    let log = app.log(id).await;
    assert_eq!(
        log[log.len() - 5..],
        [
            "return_requested",
            "return_received",
            "refund_requested",
            "refunded",
            "return_restocked"
        ]
    );
}

#[tokio::test]
async fn an_order_cancelled_after_shipping_is_refunded_even_when_the_capture_lands_later() {
    let app = spawn_app().await;
    // Captured, then cancelled: refunded at once.
    let id = confirmed_order(&app).await;
    ship(&app, id).await;
    capture(&app, id).await;
    let (status, order) = post(&app, &format!("/v1/orders/{id}/cancel"), &app.admin, None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(
        app.bus.about("tienda.payment.cmd.void", id).len(),
        0,
        "captured: not voided"
    );
    let command = app.bus.expect("tienda.payment.cmd.refund", id).await;
    assert_eq!(command.data["amount"]["amount"], 1250);
    refund(&app, &command, 1250).await;
    let order = app.order(id).await;
    assert_eq!(
        order["status"], "cancelled",
        "a cancelled order stays cancelled"
    );
    assert_eq!(order["payment"]["refunded"]["amount"], 1250);
    assert_eq!(
        app.bus.expect("tienda.order.refunded", id).await.data["full"],
        false
    );

    // Cancelled while the capture is in flight: refunded when the capture is answered.
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    ship(&app, id).await;
    let (status, _) = post(&app, &format!("/v1/orders/{id}/cancel"), &app.admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.bus.about("tienda.payment.cmd.refund", id).len(), 0);
    capture(&app, id).await;
    let command = app.bus.expect("tienda.payment.cmd.refund", id).await;
    assert_eq!(command.data["amount"]["amount"], 1250);
}

#[tokio::test]
async fn an_unanswered_capture_is_sent_again_and_a_refused_one_recorded_for_an_admin() {
    let app = spawn_app_with(&["--resend-interval-ms=100"]).await;
    let id = confirmed_order(&app).await;
    ship(&app, id).await;
    eventually("the capture sent again", || async {
        app.bus.about("tienda.payment.cmd.capture", id).len() >= 2
    })
    .await;
    let first = app.bus.expect("tienda.payment.cmd.capture", id).await;
    let resent = &app.bus.about("tienda.payment.cmd.capture", id)[1];
    assert_eq!(resent.data["payment_id"], first.data["payment_id"]);

    let refused = PaymentFailed {
        payment_id: uuid(&first.data["payment_id"]),
        order_id: id,
        refund_id: None,
        operation: PaymentOperation::Capture,
        retryable: false,
        expired: false,
        detail: "the authorization expired".into(),
    };
    let done = app.reply("payments", refused, &first).await;
    app.handled(tienda_orders::PAYMENT_CONSUMER, done).await;
    assert!(app.log(id).await.contains(&"capture_failed".to_owned()));
    let sent = app.bus.about("tienda.payment.cmd.capture", id).len();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        app.bus.about("tienda.payment.cmd.capture", id).len() <= sent + 1,
        "no longer sent once refused (one may have been in flight)"
    );
    let timeline: Value = app
        .send(
            Method::GET,
            &format!("/v1/orders/{id}/timeline"),
            Some(&app.admin),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let failed = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "capture_failed")
        .unwrap();
    assert_eq!(failed["data"]["detail"], "the authorization expired");
}

#[tokio::test]
async fn a_return_is_received_only_once_the_capture_is_settled_so_its_refund_is_never_lost() {
    let app = spawn_app().await;
    let id = confirmed_order(&app).await;
    ship(&app, id).await;
    let (status, _) = post(&app, &format!("/v1/orders/{id}/deliver"), &app.admin, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, created) = post(
        &app,
        &format!("/v1/orders/{id}/returns"),
        &app.customer,
        Some(json!({"items": [{"sku": "MUG-1", "quantity": 1}], "reason": "Wrong colour"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let receive = format!(
        "/v1/orders/{id}/returns/{}/receive",
        created["id"].as_str().unwrap()
    );
    let (status, problem) = post(&app, &receive, &app.admin, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("capture"),
        "{problem}"
    );
    assert_eq!(app.bus.about("tienda.payment.cmd.refund", id).len(), 0);

    capture(&app, id).await;
    let (status, received) = post(&app, &receive, &app.admin, None).await;
    assert_eq!(status, StatusCode::OK, "{received}");
    let command = app.bus.expect("tienda.payment.cmd.refund", id).await;
    assert_eq!(command.data["amount"]["amount"], 1250);
}
