//! The saga driven by scripted replies: inventory and payment events published onto their
//! streams as products and payments would.

use chrono::{DateTime, Utc};
use pretty_assertions::assert_eq;
use serde_json::Value;
use tienda_events::{
    Envelope, Money,
    inventory::{
        InventoryCommitted, InventoryReleased, InventoryReservationFailed, InventoryReserved, Line,
        ReleaseReason, Shortage,
    },
    payment::{
        PaymentAuthorized, PaymentDeclined, PaymentFailed, PaymentOperation, PaymentRequiresAction,
        PaymentVoided,
    },
};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

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
    reserved_until(app, reserve, Utc::now() + chrono::Duration::minutes(15)).await
}

async fn reserved_until(
    app: &TestApp,
    reserve: &Envelope<Value>,
    expires_at: DateTime<Utc>,
) -> Uuid {
    let event = InventoryReserved {
        reservation_id: uuid(&reserve.data["reservation_id"]),
        order_id: Some(reserve.correlation_id),
        items: vec![Line {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
        expires_at,
    };
    app.reply("products", event, reserve).await
}

/// Inventory's answer to a commit or release command.
async fn committed(app: &TestApp, commit: &Envelope<Value>) -> Uuid {
    let event = InventoryCommitted {
        reservation_id: uuid(&commit.data["reservation_id"]),
        items: vec![Line {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
    };
    app.reply("products", event, commit).await
}

async fn released(app: &TestApp, command: &Envelope<Value>, reason: ReleaseReason) -> Uuid {
    let event = InventoryReleased {
        reservation_id: uuid(&command.data["reservation_id"]),
        items: vec![Line {
            sku: "MUG-1".into(),
            quantity: 1,
        }],
        reason,
    };
    app.reply("products", event, command).await
}

/// Payments' `failed` answer to `command` (an authorize or a void).
async fn failed(
    app: &TestApp,
    command: &Envelope<Value>,
    operation: PaymentOperation,
    retryable: bool,
    detail: &str,
) -> Uuid {
    let event = PaymentFailed {
        payment_id: uuid(&command.data["payment_id"]),
        order_id: command.correlation_id,
        refund_id: None,
        operation,
        retryable,
        expired: false,
        detail: detail.into(),
    };
    app.reply("payments", event, command).await
}

async fn voided(app: &TestApp, void: &Envelope<Value>) -> Uuid {
    let event = PaymentVoided {
        payment_id: uuid(&void.data["payment_id"]),
        order_id: void.correlation_id,
    };
    app.reply("payments", event, void).await
}

/// Waits until at least `n` messages on `subject` about `id` were published; returns them.
async fn at_least(app: &TestApp, subject: &str, id: Uuid, n: usize) -> Vec<Envelope<Value>> {
    eventually(&format!("{n} × {subject}"), || async {
        app.bus.about(subject, id).len() >= n
    })
    .await;
    app.bus.about(subject, id)
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
async fn reserved_authorized_then_committed_confirms_the_order() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;

    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    // The operations console lists it, waiting for the payment (admins only).
    let sagas = |token: Option<String>| {
        let mut request = app.http.get(format!("{}/admin/sagas", app.admin_base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(sagas(None).await.unwrap().status(), 401);
    assert_eq!(
        sagas(Some(app.customer.clone())).await.unwrap().status(),
        403
    );
    let in_flight: Value = sagas(Some(app.admin.clone()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = in_flight["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["order_id"] == id.to_string())
        .unwrap_or_else(|| panic!("{in_flight}"));
    assert_eq!(listed["step"], "authorizing");
    assert_eq!(listed["status"], "reserved");
    assert!(listed["age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(listed["deadline"].is_string());
    assert!(in_flight["total"].as_i64().unwrap() >= 1);
    authorized(&app, &authorize).await;
    // Authorized is not confirmed: the stock must be committed first.
    app.wait_for_status(id, "authorized").await;
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    assert_eq!(sent(&app, "tienda.order.confirmed", id).await, 0);
    committed(&app, &commit).await;
    let order = app.wait_for_status(id, "confirmed").await;

    assert_eq!(authorize.data["order_id"], id.to_string());
    assert_eq!(authorize.data["amount"]["amount"], 1250);
    assert_eq!(authorize.data["payment_method"], "pm_card_visa");
    assert_eq!(
        authorize.data["client_ip"],
        crate::helpers::CLIENT_IP,
        "the fraud rules see where the checkout came from"
    );
    assert_eq!(authorize.data["billing_country"], "ES");
    assert!(authorize.data["deadline"].is_string());
    assert_eq!(
        commit.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    assert_eq!(commit.correlation_id, id);
    assert_eq!(app.saga(id).await, ("completed".to_owned(), false));
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

    // The steps are counted, the settle time measured, and both consumers report their lag
    // (the second consumer's metrics were once registered twice and never exported).
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, labels) in [
        (
            "saga_steps_total",
            &["decision=\"Authorize\"", "reply=\"Reserved\""][..],
        ),
        (
            "saga_steps_total",
            &["decision=\"Confirm\"", "reply=\"Committed\""],
        ),
        (
            "saga_settle_duration_seconds_count",
            &["outcome=\"confirmed\""],
        ),
        (
            "consumer_pending_messages",
            &["consumer=\"INVENTORY/orders-inventory-events\""],
        ),
        (
            "consumer_pending_messages",
            &["consumer=\"PAYMENT/orders-payment-events\""],
        ),
        ("saga_in_flight", &["step=\"reserving\""]),
        ("dead_letters_waiting", &["stream=\"DLQ_ORDERS\""]),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!("{name}{{"))
                && labels.iter().all(|label| l.contains(label))),
            "{name} {labels:?} is not exported:\n{metrics}"
        );
    }
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
async fn an_unanswered_authorization_times_out_releases_the_stock_voids_and_cancels() {
    let app = spawn_app_with(&["--authorize-timeout-ms=200"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;

    let order = app.wait_for_status(id, "cancelled").await;

    // The authorization may be in flight or held: voided at once, not on a late reply.
    let void = app.bus.expect("tienda.payment.cmd.void", id).await;
    assert_eq!(void.data["payment_id"], authorize.data["payment_id"]);
    assert_eq!(app.saga(id).await, ("compensating".to_owned(), true));

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
async fn an_authorization_after_its_timeout_is_voided_and_the_order_stays_cancelled() {
    let app = spawn_app_with(&["--authorize-timeout-ms=200"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    app.wait_for_status(id, "cancelled").await;
    // The proactive void reached payments before the authorization did: nothing to void.
    let proactive = app.bus.expect("tienda.payment.cmd.void", id).await;
    let refused = failed(
        &app,
        &proactive,
        PaymentOperation::Void,
        false,
        "no payment",
    )
    .await;
    app.handled("orders-payment-events", refused).await;

    // Then payments answers the authorization after all.
    let late = authorized(&app, &authorize).await;
    app.handled("orders-payment-events", late).await;

    let caused_by_late = || {
        app.bus
            .about("tienda.payment.cmd.void", id)
            .into_iter()
            .find(|v| v.causation_id == Some(late))
    };
    eventually("a void caused by the late authorization", || async {
        caused_by_late().is_some()
    })
    .await;
    let answer = caused_by_late().unwrap();
    assert_eq!(answer.data["payment_id"], authorize.data["payment_id"]);
    let order = app.order(id).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["cancellation"]["reason"], "timed_out");
    assert_eq!(sent(&app, "tienda.inventory.cmd.commit", id).await, 0);
    assert_eq!(sent(&app, "tienda.order.confirmed", id).await, 0);
    assert_eq!(app.log(id).await.last().unwrap(), "late_reply_compensated");
}

#[tokio::test]
async fn a_commit_after_the_reservation_expired_voids_the_payment_and_cancels() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    authorized(&app, &authorize).await;
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;

    // Inventory had already released the stock: it answers the commit `released`.
    released(&app, &commit, ReleaseReason::Expired).await;
    let order = app.wait_for_status(id, "cancelled").await;

    assert_eq!(order["cancellation"]["reason"], "timed_out");
    let void = app.bus.expect("tienda.payment.cmd.void", id).await;
    assert_eq!(void.data["payment_id"], authorize.data["payment_id"]);
    assert_eq!(sent(&app, "tienda.order.confirmed", id).await, 0);
    assert_eq!(
        sent(&app, "tienda.inventory.cmd.release", id).await,
        0,
        "nothing left to release"
    );
    let done = voided(&app, &void).await;
    app.handled("orders-payment-events", done).await;
    assert_eq!(app.saga(id).await, ("compensated".to_owned(), false));
    assert_eq!(
        app.log(id).await,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "cancelled",
            "payment_voided"
        ]
    );
}

#[tokio::test]
async fn an_unanswered_void_is_sent_again_until_payments_answers() {
    let app = spawn_app_with(&["--authorize-timeout-ms=200", "--resend-interval-ms=100"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    app.bus.expect("tienda.payment.cmd.authorize", id).await;
    app.wait_for_status(id, "cancelled").await;
    let first = app.bus.expect("tienda.payment.cmd.void", id).await;

    // Payments is down (provider unavailable): the void fails, retryable.
    let down = failed(&app, &first, PaymentOperation::Void, true, "provider down").await;
    app.handled("orders-payment-events", down).await;
    let voids = at_least(&app, "tienda.payment.cmd.void", id, 2).await;
    let releases = at_least(&app, "tienda.inventory.cmd.release", id, 1).await;

    assert!(
        voids
            .iter()
            .all(|v| v.data["payment_id"] == first.data["payment_id"])
    );
    let deadline: DateTime<Utc> =
        serde_json::from_value(voids[1].data["deadline"].clone()).unwrap();
    assert!(
        deadline > Utc::now() + chrono::Duration::hours(1),
        "compensations get a long deadline"
    );
    let v = voided(&app, &voids[1]).await;
    let r = released(&app, &releases[0], ReleaseReason::Requested).await;
    app.handled("orders-payment-events", v).await;
    app.handled("orders-inventory-events", r).await;
    assert_eq!(app.saga(id).await, ("compensated".to_owned(), false));
    let log = app.log(id).await;
    assert!(log.contains(&"payment_voided".to_owned()), "{log:?}");
    assert!(log.contains(&"stock_released".to_owned()), "{log:?}");
}

#[tokio::test]
async fn a_retryable_authorization_failure_is_retried_with_the_same_payment() {
    let app = spawn_app_with(&["--authorize-retry-ms=50"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    reserved(&app, &reserve).await;
    let first = app.bus.expect("tienda.payment.cmd.authorize", id).await;

    failed(
        &app,
        &first,
        PaymentOperation::Authorize,
        true,
        "provider down",
    )
    .await;
    let tries = at_least(&app, "tienda.payment.cmd.authorize", id, 2).await;

    assert_eq!(tries[1].data["payment_id"], first.data["payment_id"]);
    let deadline = |e: &Envelope<Value>| {
        serde_json::from_value::<DateTime<Utc>>(e.data["deadline"].clone())
            .unwrap()
            .timestamp_micros()
    };
    assert_eq!(
        deadline(&tries[1]),
        deadline(&first),
        "within the step's deadline"
    );
    assert_eq!(app.order(id).await["status"], "reserved");
    authorized(&app, &tries[1]).await;
    app.wait_for_status(id, "authorized").await;
    assert_eq!(sent(&app, "tienda.order.cancelled", id).await, 0);
}

#[tokio::test]
async fn payment_deadlines_stay_below_the_reservation_s_expiry_and_the_owner_sees_the_challenge() {
    // A long authorize timeout and a long challenge: the reservation's expiry bounds both.
    let app = spawn_app_with(&["--authorize-timeout-ms=600000"]).await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    let expires_at = Utc::now() + chrono::Duration::minutes(5);
    let margin = chrono::Duration::seconds(60);
    reserved_until(&app, &reserve, expires_at).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    let deadline: DateTime<Utc> =
        serde_json::from_value(authorize.data["deadline"].clone()).unwrap();
    assert!(
        deadline <= expires_at - margin,
        "{deadline} vs {expires_at}"
    );

    let challenge = PaymentRequiresAction {
        payment_id: uuid(&authorize.data["payment_id"]),
        order_id: id,
        action_url: "https://pay.example/3ds/abc".into(),
        expires_at: Utc::now() + chrono::Duration::minutes(15),
    };
    app.reply("payments", challenge, &authorize).await;
    let order = app.wait_for_status(id, "awaiting_payment_action").await;

    let saga_deadline: DateTime<Utc> =
        sqlx::query_scalar("SELECT deadline FROM sagas WHERE order_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    // Microseconds: PostgreSQL's precision.
    assert_eq!(
        saga_deadline.timestamp_micros(),
        (expires_at - margin).timestamp_micros()
    );
    assert_eq!(
        order["payment_action"]["url"],
        "https://pay.example/3ds/abc"
    );
    let shown: DateTime<Utc> =
        serde_json::from_value(order["payment_action"]["expires_at"].clone()).unwrap();
    assert_eq!(shown.timestamp_micros(), saga_deadline.timestamp_micros());
    let as_admin: Value = app
        .send(
            reqwest::Method::GET,
            &format!("/v1/orders/{id}"),
            Some(&app.admin),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(as_admin["status"], "awaiting_payment_action");
    assert!(as_admin.get("payment_action").is_none(), "{as_admin}");
}

#[tokio::test]
async fn one_failing_saga_does_not_hold_up_the_others_deadlines() {
    let app = spawn_app().await;
    let poisoned = app.placed_order("MUG-1", 1250, 1).await;
    let healthy = app.placed_order("MUG-2", 1250, 1).await;
    // The poisoned order's next log entry cannot be written (its sequence number is taken).
    sqlx::query(
        "INSERT INTO order_events (order_id, seq, kind, data) \
         SELECT id, version + 1, 'poison', '{}' FROM orders WHERE id = $1",
    )
    .bind(poisoned)
    .execute(&app.db)
    .await
    .unwrap();
    // Both reservations time out now (poisoned first in the sweeper's order).
    sqlx::query(
        "UPDATE sagas SET deadline = now() - CASE WHEN order_id = $1 THEN interval '2 s' \
                                                   ELSE interval '1 s' END \
         WHERE order_id IN ($1, $2)",
    )
    .bind(poisoned)
    .bind(healthy)
    .execute(&app.db)
    .await
    .unwrap();

    let order = app.wait_for_status(healthy, "cancelled").await;

    assert_eq!(order["cancellation"]["reason"], "timed_out");
    assert_eq!(app.order(poisoned).await["status"], "pending");
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
    let mut answer = Envelope::new(
        "payments",
        PaymentAuthorized {
            payment_id: uuid(&authorize.data["payment_id"]),
            order_id: id,
            amount: eur(1250),
            provider: "sandbox".into(),
        },
    );
    answer.correlation_id = id;
    answer.causation_id = Some(authorize.id);
    app.publish(answer.clone()).await;
    app.handled("orders-payment-events", answer.id).await;
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    committed(&app, &commit).await;
    app.wait_for_status(id, "confirmed").await;

    let restated = authorized(&app, &authorize).await;
    app.handled("orders-payment-events", restated).await;
    // The very same message delivered again past the stream's de-duplication (a fresh
    // Nats-Msg-Id, the same envelope id): only the consumer's inbox can drop it.
    let sequence = app.publish_again(&answer).await;
    app.acked("PAYMENT", "orders-payment-events", sequence)
        .await;

    let inbox: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tienda_inbox WHERE consumer = 'orders-payment-events' \
         AND message_id = $1",
    )
    .bind(answer.id.to_string())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(inbox, 1, "recorded once, recognised the second time");
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

/// The raw body of a GET as `token`; asserts `expected`.
async fn body(app: &TestApp, path: &str, token: &str, expected: u16) -> String {
    let response = app
        .send(reqwest::Method::GET, path, Some(token), None, None)
        .await;
    assert_eq!(response.status().as_u16(), expected, "GET {path}");
    response.text().await.unwrap()
}

/// Calls the admin listener's rebuild as `token`.
async fn rebuild(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/admin/orders/rebuild", app.admin_base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_read_models_rebuilt_from_the_log_answer_byte_for_byte_as_before() {
    let app = spawn_app().await;
    // Confirmed.
    let confirmed = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app
        .bus
        .expect("tienda.inventory.cmd.reserve", confirmed)
        .await;
    reserved(&app, &reserve).await;
    let authorize = app
        .bus
        .expect("tienda.payment.cmd.authorize", confirmed)
        .await;
    authorized(&app, &authorize).await;
    let commit = app
        .bus
        .expect("tienda.inventory.cmd.commit", confirmed)
        .await;
    committed(&app, &commit).await;
    app.wait_for_status(confirmed, "confirmed").await;
    // ... and shipped: the view shows the shipment.
    let shipped = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/orders/{confirmed}/ship"),
            Some(&app.admin),
            None,
            Some(&serde_json::json!({"carrier": "SEUR", "tracking_number": "ES-1"})),
        )
        .await;
    assert_eq!(shipped.status().as_u16(), 200);
    // Cancelled: the payment is declined.
    let cancelled = app.placed_order("MUG-2", 990, 2).await;
    let reserve = app
        .bus
        .expect("tienda.inventory.cmd.reserve", cancelled)
        .await;
    reserved(&app, &reserve).await;
    let authorize = app
        .bus
        .expect("tienda.payment.cmd.authorize", cancelled)
        .await;
    declined(&app, &authorize).await;
    app.wait_for_status(cancelled, "cancelled").await;
    // Awaiting the customer's 3-D Secure challenge.
    let awaiting = app.placed_order("MUG-3", 500, 3).await;
    let reserve = app
        .bus
        .expect("tienda.inventory.cmd.reserve", awaiting)
        .await;
    reserved(&app, &reserve).await;
    let challenged = app
        .bus
        .expect("tienda.payment.cmd.authorize", awaiting)
        .await;
    let challenge = PaymentRequiresAction {
        payment_id: uuid(&challenged.data["payment_id"]),
        order_id: awaiting,
        action_url: "https://pay.example/3ds/abc".into(),
        expires_at: Utc::now() + chrono::Duration::minutes(15),
    };
    app.reply("payments", challenge, &challenged).await;
    app.wait_for_status(awaiting, "awaiting_payment_action")
        .await;

    let paths = [
        format!("/v1/orders/{confirmed}"),
        format!("/v1/orders/{cancelled}"),
        format!("/v1/orders/{awaiting}"),
        "/v1/orders".to_owned(),
        "/v1/orders?limit=2".to_owned(),
    ];
    let mut before = Vec::new();
    for path in &paths {
        before.push(body(&app, path, &app.customer, 200).await);
    }
    let log_before: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let sagas_before: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, step FROM sagas ORDER BY order_id")
            .fetch_all(&app.db)
            .await
            .unwrap();

    sqlx::query("DELETE FROM order_lines")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM orders")
        .execute(&app.db)
        .await
        .unwrap();
    body(&app, &paths[0], &app.customer, 404).await;
    assert_eq!(rebuild(&app, None).await.status().as_u16(), 401);
    assert_eq!(
        rebuild(&app, Some(&app.customer)).await.status().as_u16(),
        403
    );
    let response = rebuild(&app, Some(&app.admin)).await;
    assert_eq!(response.status().as_u16(), 200);
    let rebuilt: Value = response.json().await.unwrap();

    assert_eq!(rebuilt, serde_json::json!({"orders": 3}));
    for (path, before) in paths.iter().zip(&before) {
        assert_eq!(
            &body(&app, path, &app.customer, 200).await,
            before,
            "{path}"
        );
    }
    let log_after: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(log_after, log_before);
    let sagas_after: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT order_id, step FROM sagas ORDER BY order_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(sagas_after, sagas_before);
    // The saga carries on over the rebuilt projection.
    authorized(&app, &challenged).await;
    let commit = app
        .bus
        .expect("tienda.inventory.cmd.commit", awaiting)
        .await;
    committed(&app, &commit).await;
    app.wait_for_status(awaiting, "confirmed").await;
}

#[tokio::test]
async fn a_restarted_orders_process_resumes_the_sagas_in_flight() {
    let mut app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    app.stop().await;

    // Inventory answers while no orders process runs.
    reserved(&app, &reserve).await;
    assert!(app.bus.about("tienda.payment.cmd.authorize", id).is_empty());
    app.start().await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    authorized(&app, &authorize).await;
    let commit = app.bus.expect("tienda.inventory.cmd.commit", id).await;
    committed(&app, &commit).await;
    let order = app.wait_for_status(id, "confirmed").await;

    assert_eq!(order["cancellation"], Value::Null);
    assert_eq!(
        commit.data["reservation_id"],
        reserve.data["reservation_id"]
    );
    assert_eq!(app.saga(id).await, ("completed".to_owned(), false));
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

/// A reply locks its saga and order in one statement: both rows must be locked by it (the
/// HTTP cancel and the sweeper take the same locks), whichever key names the saga.
#[tokio::test]
async fn a_reply_locks_the_saga_and_its_order_in_one_statement() {
    use tienda_orders::store::{self, SagaKey};
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    let reservation: Uuid = reserve.data["reservation_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for key in [SagaKey::Reservation(reservation), SagaKey::Order(id)] {
        let mut tx = app.db.begin().await.unwrap();
        let (saga, order) = store::lock_saga_and_order(&mut tx, key)
            .await
            .unwrap()
            .expect("the saga and its order");
        assert_eq!((saga.order_id, order.id), (id, id));
        assert_eq!(order.status.to_string(), "pending");
        for table in ["sagas WHERE order_id", "orders WHERE id"] {
            let mut other = app.db.begin().await.unwrap();
            let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM {table} = $1 FOR UPDATE NOWAIT"
            )))
            .bind(id)
            .execute(&mut *other)
            .await
            .expect_err("the row is locked by the reply's transaction");
            assert_eq!(
                locked.as_database_error().and_then(|e| e.code()).as_deref(),
                Some("55P03"),
                "{table}: {locked}"
            );
        }
        tx.rollback().await.unwrap();
    }
    let mut conn = app.db.acquire().await.unwrap();
    let none = store::lock_saga_and_order(&mut conn, SagaKey::Payment(Uuid::now_v7()))
        .await
        .unwrap();
    assert!(none.is_none());
}
