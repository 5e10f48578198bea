use chrono::Utc;
use pretty_assertions::assert_eq;
use tienda_events::{
    Envelope,
    money::Money,
    order::{OrderDelivered, OrderLine, OrderPlaced, OrderRefunded, OrderShipped},
    payment::{PaymentCaptured, PaymentDeclined},
    user::{
        UserEmailVerificationRequested, UserPasswordResetRequested, UserPasswordResetRequestedV2,
        UserRegistrationAttempted,
    },
};
use uuid::Uuid;

use crate::helpers::{sealer, spawn_app, spawn_app_with};

fn eur(amount: i64) -> Money {
    serde_json::from_value(serde_json::json!({"amount": amount, "currency": "EUR"})).unwrap()
}

fn shipped(customer: Uuid, email: &str) -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: Some(customer),
        email: email.into(),
        carrier: "Correos".into(),
        tracking_number: "PK0042".into(),
    }
}

#[tokio::test]
async fn a_shipped_order_is_mailed_with_text_and_html_parts_and_one_click_unsubscribe() {
    let app = spawn_app().await;
    let shipped = shipped(Uuid::now_v7(), "ana@example.com");
    let order_id = shipped.order_id;

    let event = app.publish("orders", shipped).await;

    let mail = app.mail_for(event).await;
    assert_eq!(mail.header("To").as_deref(), Some("ana@example.com"));
    assert_eq!(
        mail.header("Subject"),
        Some(format!("Your order {order_id} is on its way"))
    );
    let unsubscribe = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        unsubscribe.starts_with("<http://shop.test/v1/notifications/unsubscribe?token="),
        "{unsubscribe}"
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    let text = mail.part("text/plain");
    assert!(text.contains("Tracking number: PK0042"), "{text}");
    assert!(text.contains(&format!("http://shop.test/orders/{order_id}")));
    let html = mail.part("text/html");
    assert!(html.contains("<strong>PK0042</strong>"), "{html}");
    assert!(html.contains("Unsubscribe</a>"));
}

#[tokio::test]
async fn the_unsubscribe_link_stops_the_next_shipping_mail_but_not_a_refund() {
    let app = spawn_app().await;
    let customer = Uuid::now_v7();
    let first = app
        .publish("orders", shipped(customer, "ben@example.com"))
        .await;
    let link = app
        .mail_for(first)
        .await
        .header("List-Unsubscribe")
        .unwrap();
    let link = app.local(link.trim_matches(['<', '>']));

    let response = app
        .http
        .post(&link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["category"], "shipping");

    let delivered = app
        .publish(
            "orders",
            OrderDelivered {
                order_id: Uuid::now_v7(),
                customer_id: Some(customer),
                email: "ben@example.com".into(),
                delivered_at: Utc::now(),
            },
        )
        .await;
    let refunded = app
        .publish(
            "orders",
            OrderRefunded {
                order_id: Uuid::now_v7(),
                customer_id: Some(customer),
                email: "ben@example.com".into(),
                amount: eur(1250),
                refunded_total: eur(1250),
                full: false,
            },
        )
        .await;

    assert_eq!(app.settled(delivered).await.status, "suppressed");
    let refund = app.mail_for(refunded).await;
    assert!(refund.part("text/plain").contains("We refunded EUR 12.50"));
    assert_eq!(
        refund.header("List-Unsubscribe"),
        None,
        "refunds are critical"
    );
    assert_eq!(app.mails().len(), 2, "the shipped and the refund mail only");
}

#[tokio::test]
async fn an_event_published_again_under_another_message_id_is_mailed_once() {
    let app = spawn_app().await;
    let envelope = Envelope::new("orders", shipped(Uuid::now_v7(), "cai@example.com"));

    app.publish_as(&envelope, "first-publication").await;
    app.publish_as(&envelope, "second-publication").await;
    app.drained("ORDER", "notifications-order-events").await;

    assert_eq!(app.settled(envelope.id).await.status, "sent");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
        .bind(envelope.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(app.mails().len(), 1);
}

#[tokio::test]
async fn a_declined_payment_is_mailed_to_the_address_its_order_was_placed_with() {
    let app = spawn_app().await;
    let order_id = Uuid::now_v7();
    let placed = app
        .publish(
            "orders",
            OrderPlaced {
                order_id,
                customer_id: None,
                email: "guest@example.com".into(),
                items: vec![OrderLine {
                    sku: "MUG-1".into(),
                    name: "Mug".into(),
                    quantity: 2,
                    unit_price: eur(999),
                }],
                total: eur(1998),
            },
        )
        .await;
    let placed_mail = app.mail_for(placed).await;
    assert!(placed_mail.part("text/plain").contains("Total: EUR 19.98"));

    let declined = app
        .publish(
            "payments",
            PaymentDeclined {
                payment_id: Uuid::now_v7(),
                order_id,
                code: "insufficient_funds".into(),
                message: "Your card has insufficient funds.".into(),
            },
        )
        .await;

    let mail = app.mail_for(declined).await;
    assert_eq!(mail.header("To").as_deref(), Some("guest@example.com"));
    assert!(
        mail.part("text/plain")
            .contains("Your card has insufficient funds.")
    );
    // The capture issued the invoice: the customer is told where to download it.
    let captured = app
        .publish(
            "payments",
            PaymentCaptured {
                payment_id: Uuid::now_v7(),
                order_id,
                amount: eur(1998),
            },
        )
        .await;
    let invoice = app.mail_for(captured).await;
    assert_eq!(invoice.header("To").as_deref(), Some("guest@example.com"));
    assert_eq!(
        invoice.header("Subject"),
        Some(format!("Your invoice for order {order_id}"))
    );
    let text = invoice.part("text/plain");
    assert!(text.contains("We charged EUR 19.98"), "{text}");
    assert!(text.contains(&format!("http://shop.test/v1/invoices?order_id={order_id}")));
    assert!(
        invoice.header("List-Unsubscribe").is_none(),
        "an invoice is not optional"
    );
}

#[tokio::test]
async fn a_mail_server_that_refuses_connections_is_retried_and_the_failure_recorded() {
    // A port nothing listens on, held for the whole test: bound but never listening, so a
    // connection is refused at once. (Bound, then released, the port could be taken by another
    // test's server running alongside, which accepts and never speaks SMTP: the delivery then
    // hung past the test's deadline in CI.)
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let smtp = format!("--smtp-url=smtp://127.0.0.1:{port}");
    let app = spawn_app_with(&[
        &smtp,
        "--max-attempts=3",
        "--retry-base-ms=10",
        "--retry-max-ms=20",
    ])
    .await;

    let event = app
        .publish(
            "auth",
            UserPasswordResetRequested {
                user_id: Uuid::now_v7(),
                email: "dee@example.com".into(),
                token: "reset-token".into(),
                expires_at: Utc::now(),
            },
        )
        .await;

    let delivery = app.settled(event).await;
    assert_eq!(delivery.status, "failed");
    assert_eq!(delivery.attempts, 3);
    assert!(
        delivery
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("smtp"),
        "{delivery:?}"
    );
    assert!(app.mails().is_empty());
    drop(reserved);
}

#[tokio::test]
async fn a_circuit_policy_on_smtp_stops_trying_a_dead_mail_server_without_using_attempts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let smtp = format!("--smtp-url=smtp://127.0.0.1:{port}");
    let policies = crate::helpers::policy_dir(
        "apiVersion: tienda.dev/v1alpha1\n\
         kind: CircuitPolicy\n\
         metadata: {name: smtp}\n\
         spec:\n  \
           targetRef: {kind: External, name: smtp}\n  \
           circuitBreaker: {consecutiveFailures: 2, window: 60s, openFor: 60s, halfOpenRequests: 1}\n",
    );
    let policy = format!("--policy-path={}", policies.display());
    let app = spawn_app_with(&[
        &smtp,
        &policy,
        "--max-attempts=3",
        "--retry-base-ms=10",
        "--retry-max-ms=20",
    ])
    .await;

    let event = app
        .publish(
            "auth",
            UserPasswordResetRequested {
                user_id: Uuid::now_v7(),
                email: "fay@example.com".into(),
                token: "reset-token".into(),
                expires_at: Utc::now(),
            },
        )
        .await;

    // Two refused connections open the circuit; the third attempt is not made: the delivery
    // waits for the circuit instead of failing on its last attempt (as it does without it).
    crate::helpers::eventually("the circuit holds the delivery", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM delivery_events e JOIN deliveries d ON d.id = e.delivery_id
             WHERE d.event_id = $1 AND e.status = 'throttled'
               AND e.detail LIKE 'the circuit to smtp is open%'",
        )
        .bind(event)
        .fetch_one(&app.db)
        .await
        .unwrap()
            == 1
    })
    .await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM deliveries WHERE event_id = $1")
            .bind(event)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("queued", 2));
}

#[tokio::test]
async fn a_password_reset_is_mailed_with_its_link_and_blanked_once_sent() {
    let app = spawn_app().await;
    let event = app
        .publish(
            "auth",
            UserPasswordResetRequested {
                user_id: Uuid::now_v7(),
                email: "eva@example.com".into(),
                token: "tok-123".into(),
                expires_at: Utc::now(),
            },
        )
        .await;

    let mail = app.mail_for(event).await;

    assert!(
        mail.part("text/plain")
            .contains("http://shop.test/reset-password?token=tok-123")
    );
    assert_eq!(mail.header("List-Unsubscribe"), None);
    let row = app.settled(event).await;
    assert_eq!((row.locale.as_str(), row.template_version), ("en", 1));
    assert_eq!(
        row.body_text, "",
        "the reset link does not rest in the database"
    );
}

/// Auth seals the tokens of account links (the stream keeps events for days); notifications
/// opens them with the shared keys, mails the link, and keeps it nowhere.
#[tokio::test]
async fn sealed_account_links_are_opened_mailed_and_blanked() {
    let app = spawn_app().await;
    let ada = Uuid::now_v7();
    let reset = app
        .publish(
            "auth",
            UserPasswordResetRequestedV2 {
                user_id: ada,
                email: "ada@example.com".into(),
                sealed_token: sealer().seal(
                    &UserPasswordResetRequestedV2::seal_context(ada),
                    "reset-tok-9",
                ),
                expires_at: Utc::now(),
            },
        )
        .await;
    let verify = app
        .publish(
            "auth",
            UserEmailVerificationRequested {
                user_id: ada,
                email: "ada@example.com".into(),
                sealed_token: sealer().seal(
                    &UserEmailVerificationRequested::seal_context(ada),
                    "verify-tok-7",
                ),
                expires_at: Utc::now(),
            },
        )
        .await;
    let attempted = app
        .publish(
            "auth",
            UserRegistrationAttempted {
                user_id: ada,
                email: "ada@example.com".into(),
            },
        )
        .await;
    let mail = app.mail_for(reset).await;
    assert!(
        mail.part("text/plain")
            .contains("http://shop.test/reset-password?token=reset-tok-9")
    );
    let mail = app.mail_for(verify).await;
    assert!(
        mail.part("text/plain")
            .contains("http://shop.test/verify-email?token=verify-tok-7"),
        "{}",
        mail.part("text/plain")
    );
    for event in [reset, verify] {
        assert_eq!(app.settled(event).await.body_text, "", "not kept once sent");
    }
    let mail = app.mail_for(attempted).await;
    assert!(
        mail.part("text/plain")
            .contains("http://shop.test/reset-password")
    );
    assert!(mail.part("text/plain").contains("already has one"));
}

/// A token sealed with other keys (notifications misconfigured), or moved into another
/// account's event, never opens: the event goes to the dead letter, nothing is mailed.
#[tokio::test]
async fn a_link_that_does_not_open_is_dead_lettered_not_mailed() {
    let app = spawn_app().await;
    let (ada, eve) = (Uuid::now_v7(), Uuid::now_v7());
    let foreign = tienda_kit::seal::Sealer::from_config(&tienda_kit::seal::Sealer::generate_key())
        .unwrap()
        .seal(&UserPasswordResetRequestedV2::seal_context(ada), "tok");
    let moved = sealer().seal(&UserPasswordResetRequestedV2::seal_context(eve), "eves-tok");
    let mut events = Vec::new();
    for sealed_token in [foreign, moved] {
        events.push(
            app.publish(
                "auth",
                UserPasswordResetRequestedV2 {
                    user_id: ada,
                    email: "ada@example.com".into(),
                    sealed_token,
                    expires_at: Utc::now(),
                },
            )
            .await,
        );
    }
    app.drained("USER", "notifications-user-events").await;
    let admin = app.issuer.token(&Uuid::now_v7().to_string(), &["admin"]);
    let letters: serde_json::Value = app
        .http
        .get(format!("{}/admin/dead-letters", app.admin_base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = letters["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{letters}");
    assert!(
        items[0].to_string().contains("EVENT_SEALING_KEYS"),
        "the reason says what to fix: {letters}"
    );
    for event in events {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
            .bind(event)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    }
    assert!(app.mails().is_empty());
}

/// Recording a delivery is one statement: the row, the first entry of its history (with why
/// it was held or suppressed) and, for a queued one, the worker's wake-up at commit. Recorded
/// again, nothing changes.
#[tokio::test]
async fn a_recorded_delivery_has_its_history_and_wakes_the_worker_once_committed() {
    use tienda_notifications::{
        channel::{Channel, Outgoing},
        deliveries::{self, NewDelivery, Status},
    };
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db)
        .await
        .unwrap();
    listener.listen(deliveries::QUEUED_CHANNEL).await.unwrap();
    let new = |status: Status, to: &str, not_before| NewDelivery {
        event_id: Uuid::now_v7(),
        event_type: "order.shipped".into(),
        kind: "order_shipped",
        category: "shipping",
        critical: false,
        sensitive: false,
        user_id: None,
        channel: Channel::Email,
        outgoing: Outgoing {
            id: Uuid::now_v7(),
            to: to.into(),
            subject: "Shipped".into(),
            text: "On its way".into(),
            html: String::new(),
            unsubscribe_url: None,
        },
        locale: "en",
        template_version: 0,
        status,
        not_before,
    };
    let held_until = Utc::now() + chrono::Duration::hours(3);
    let suppressed = new(Status::Suppressed("opted_out"), "a@example.com", None);
    let held = new(Status::Queued, "b@example.com", Some(held_until));
    let mut tx = app.db.begin().await.unwrap();
    assert!(deliveries::record(&mut tx, &suppressed).await.unwrap());
    assert!(deliveries::record(&mut tx, &held).await.unwrap());
    // The same delivery again (a redelivered event): nothing new.
    assert!(!deliveries::record(&mut tx, &held).await.unwrap());
    tx.commit().await.unwrap();

    let woken = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("a queued delivery wakes the worker")
        .unwrap();
    assert_eq!(woken.channel(), deliveries::QUEUED_CHANNEL);
    let history: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT delivery_id, status, detail FROM delivery_events \
         WHERE delivery_id = ANY($1) ORDER BY delivery_id",
    )
    .bind(vec![suppressed.outgoing.id, held.outgoing.id])
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        history,
        vec![
            (
                suppressed.outgoing.id,
                "suppressed".to_owned(),
                Some("opted_out".to_owned())
            ),
            (
                held.outgoing.id,
                "queued".to_owned(),
                Some(format!(
                    "quiet hours: held until {}",
                    held_until.to_rfc3339()
                ))
            ),
        ]
    );
}
