//! Delivery history, admin search and replay, the provider's signed callbacks and the
//! suppression list.

use chrono::Utc;
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::order::OrderShipped;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

/// The callback secret the tests' provider signs with.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn shipped(customer: Uuid, email: &str) -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: Some(customer),
        email: email.into(),
        carrier: "Correos".into(),
        tracking_number: "PK0042".into(),
    }
}

async fn get(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    let response = app.send(Method::GET, path, Some(token), None).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The delivery id of `event_id`'s message.
async fn delivery_of(app: &TestApp, event_id: Uuid) -> Uuid {
    app.settled(event_id).await;
    sqlx::query_scalar("SELECT id FROM deliveries WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Posts `body` to the email callback, signed as the provider would (`secret`, `at`).
async fn callback(
    app: &TestApp,
    webhook_id: &str,
    body: &Value,
    secret: &str,
    at: i64,
) -> (StatusCode, Value) {
    let payload = serde_json::to_vec(body).unwrap();
    let signature = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(webhook_id, at, &payload)
        .unwrap();
    let response = app
        .http
        .post(app.url("/v1/notifications/callbacks/email"))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", signature)
        .body(payload)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn admin(app: &TestApp) -> String {
    app.issuer.token(&Uuid::now_v7().to_string(), &["admin"])
}

#[tokio::test]
async fn a_user_reads_their_own_history_and_an_admin_searches_everyone() {
    let app = spawn_app().await;
    let (ana, bea) = (Uuid::now_v7(), Uuid::now_v7());
    let first = app.publish("orders", shipped(ana, "ana@example.com")).await;
    let second = app.publish("orders", shipped(ana, "ana@example.com")).await;
    let other = app.publish("orders", shipped(bea, "Bea@Example.com")).await;
    for event in [first, second, other] {
        app.settled(event).await;
    }
    let token = app.issuer.token(&ana.to_string(), &["customer"]);

    let (status, page) = get(&app, "/v1/notifications", &token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "only Ana's: {page}");
    // Newest first (ids are UUIDv7: the order the deliveries were written, which a
    // concurrent consumer may not take in publishing order).
    let mut anas = [
        delivery_of(&app, first).await,
        delivery_of(&app, second).await,
    ];
    anas.sort_unstable();
    assert_eq!(items[0]["id"], json!(anas[1]), "newest first");
    assert_eq!(items[1]["id"], json!(anas[0]));
    assert_eq!(items[0]["kind"], "order_shipped");
    assert_eq!(items[0]["status"], "sent");
    assert!(
        items[0].get("last_error").is_none(),
        "errors are for admins"
    );
    let (_, one) = get(&app, "/v1/notifications?limit=1", &token).await;
    let cursor = one["next_cursor"].as_str().expect("a next page");
    let (_, rest) = get(
        &app,
        &format!("/v1/notifications?limit=1&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(rest["items"][0]["id"], json!(anas[0]));
    let (status, _) = get(&app, "/v1/notifications?limit=0", &token).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app.send(Method::GET, "/v1/notifications", None, None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let (status, _) = get(&app, "/v1/notifications/deliveries", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "search is for admins");
    let admin = admin(&app);
    let (status, found) = get(
        &app,
        "/v1/notifications/deliveries?recipient=bea@example.com",
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        1,
        "any case: {found}"
    );
    assert_eq!(found["items"][0]["user_id"], json!(bea));
    assert_eq!(found["items"][0]["event_id"], json!(other));
    let (_, sent) = get(&app, "/v1/notifications/deliveries?status=sent", &admin).await;
    assert_eq!(sent["items"].as_array().unwrap().len(), 3);
    let (status, _) = get(&app, "/v1/notifications/deliveries?status=lost", &admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let id = delivery_of(&app, first).await;
    let (status, detail) = get(&app, &format!("/v1/notifications/deliveries/{id}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let history: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "sent"]);
    let (status, _) = get(&app, "/v1/notifications/deliveries/nope", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_admin_replays_a_failed_delivery_and_nothing_else() {
    // A port nothing listens on: every attempt fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(&[
        &format!("--smtp-url=smtp://127.0.0.1:{port}"),
        "--max-attempts=1",
    ])
    .await;
    let event = app
        .publish("orders", shipped(Uuid::now_v7(), "cai@example.com"))
        .await;
    assert_eq!(app.settled(event).await.status, "failed");
    let id = delivery_of(&app, event).await;
    let admin = admin(&app);

    let (status, failed) = get(&app, "/v1/notifications/deliveries?status=failed", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["items"][0]["id"], json!(id), "the dead letters");
    let customer = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let path = format!("/v1/notifications/deliveries/{id}/replay");
    let refused = app.send(Method::POST, &path, Some(&customer), None).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let replayed = app.send(Method::POST, &path, Some(&admin), None).await;
    assert_eq!(replayed.status(), StatusCode::OK);

    // It is tried again (and fails again: the server is still away).
    eventually("the replayed delivery failed again", || async {
        let (_, detail) = get(&app, &format!("/v1/notifications/deliveries/{id}"), &admin).await;
        detail["events"].as_array().unwrap().len() == 4 && detail["status"] == "failed"
    })
    .await;
    let (_, detail) = get(&app, &format!("/v1/notifications/deliveries/{id}"), &admin).await;
    let history: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "failed", "queued", "failed"]);
    assert!(
        detail["events"][2]["detail"]
            .as_str()
            .unwrap()
            .starts_with("replayed by"),
        "{detail}"
    );
    assert_eq!(detail["attempts"], 1, "attempts start over");

    let again = app
        .send(
            Method::POST,
            &format!("/v1/notifications/deliveries/{}/replay", Uuid::now_v7()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_until_an_admin_lifts_it() {
    let app = spawn_app_with(&[&format!("--callback-secrets={SECRET}")]).await;
    let customer = Uuid::now_v7();
    let event = app
        .publish("orders", shipped(customer, "eve@example.com"))
        .await;
    let id = delivery_of(&app, event).await;
    let now = Utc::now().timestamp();
    let message_id = format!("<{id}@tienda.localhost>");

    let (status, answer) = callback(
        &app,
        "msg_1",
        &json!({"type": "delivered", "message_id": message_id}),
        SECRET,
        now,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    let admin = admin(&app);
    let path = format!("/v1/notifications/deliveries/{id}");
    assert_eq!(get(&app, &path, &admin).await.1["status"], "delivered");

    // Forged, stale or replayed callbacks change nothing.
    let bounce = json!({"type": "bounced", "bounce": "hard", "message_id": message_id,
                        "detail": "550 5.1.1 user unknown"});
    let (status, problem) = callback(&app, "msg_2", &bounce, "whsec_b3RoZXItc2VjcmV0", now).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let (status, _) = callback(&app, "msg_2", &bounce, SECRET, now - 3600).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an hour old");
    assert_eq!(get(&app, &path, &admin).await.1["status"], "delivered");

    let (status, answer) = callback(&app, "msg_2", &bounce, SECRET, now).await;
    assert_eq!(
        (status, answer["outcome"].clone()),
        (StatusCode::OK, json!("applied"))
    );
    let (_, answer) = callback(&app, "msg_2", &bounce, SECRET, now).await;
    assert_eq!(answer["outcome"], "duplicate");
    let (_, answer) = callback(
        &app,
        "msg_3",
        &json!({"type": "delivered", "message_id": format!("<{}@x>", Uuid::now_v7())}),
        SECRET,
        now,
    )
    .await;
    assert_eq!(answer["outcome"], "unknown_message");
    let (_, detail) = get(&app, &path, &admin).await;
    assert_eq!(detail["status"], "bounced");
    assert_eq!(detail["status_reason"], "550 5.1.1 user unknown");
    let replay = app
        .send(Method::POST, &format!("{path}/replay"), Some(&admin), None)
        .await;
    assert_eq!(
        replay.status(),
        StatusCode::CONFLICT,
        "only failed deliveries are replayed"
    );
    let (_, listed) = get(&app, "/v1/notifications/suppressions", &admin).await;
    assert_eq!(listed["items"][0]["recipient"], "eve@example.com");
    assert_eq!(listed["items"][0]["reason"], "hard_bounce");

    // The next message to the address (in any case) is recorded, not sent.
    let mails_before = app.mails().len();
    let next = app
        .publish("orders", shipped(customer, "EVE@example.com"))
        .await;
    let row = app.settled(next).await;
    assert_eq!(row.status, "suppressed");
    assert_eq!(app.mails().len(), mails_before, "nothing sent");
    let (_, found) = get(
        &app,
        &format!("/v1/notifications/deliveries?event_id={next}"),
        &admin,
    )
    .await;
    assert_eq!(found["items"][0]["status_reason"], "hard_bounce");

    let lifted = app
        .send(
            Method::DELETE,
            "/v1/notifications/suppressions/email/Eve@Example.com",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(lifted.status(), StatusCode::NO_CONTENT);
    let again = app
        .send(
            Method::DELETE,
            "/v1/notifications/suppressions/email/eve@example.com",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let after = app
        .publish("orders", shipped(customer, "eve@example.com"))
        .await;
    assert_eq!(app.settled(after).await.status, "sent");
}

#[tokio::test]
async fn a_complaint_suppresses_and_a_soft_bounce_only_records() {
    let app = spawn_app_with(&[&format!("--callback-secrets=whsec_b2xk,{SECRET}")]).await;
    let event = app
        .publish("orders", shipped(Uuid::now_v7(), "fay@example.com"))
        .await;
    let id = delivery_of(&app, event).await;
    let now = Utc::now().timestamp();
    let soft = json!({"type": "bounced", "bounce": "soft", "message_id": id.to_string()});
    let (status, _) = callback(&app, "s1", &soft, SECRET, now).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the second secret verifies (rotation)"
    );
    let admin = admin(&app);
    let (_, detail) = get(&app, &format!("/v1/notifications/deliveries/{id}"), &admin).await;
    assert_eq!(
        detail["status"], "sent",
        "the provider retries a soft bounce"
    );
    assert_eq!(detail["events"][2]["status"], "soft_bounce");
    let (_, listed) = get(&app, "/v1/notifications/suppressions", &admin).await;
    assert_eq!(listed["items"], json!([]));

    let complaint = json!({"type": "complained", "message_id": id.to_string()});
    callback(&app, "c1", &complaint, SECRET, now).await;
    let (_, listed) = get(
        &app,
        "/v1/notifications/suppressions?recipient=FAY@example.com",
        &admin,
    )
    .await;
    assert_eq!(listed["items"][0]["reason"], "complaint");
}

#[tokio::test]
async fn callbacks_are_refused_when_no_secret_is_set() {
    let app = spawn_app().await;
    let (status, problem) = callback(
        &app,
        "x",
        &json!({"type": "delivered", "message_id": "x"}),
        SECRET,
        Utc::now().timestamp(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("NOTIFICATIONS_CALLBACK_SECRETS")
    );
}

#[tokio::test]
async fn deliveries_by_status_and_the_dead_letters_are_prometheus_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(&[
        &format!("--smtp-url=smtp://127.0.0.1:{port}"),
        "--max-attempts=1",
        "--metrics-refresh-seconds=1",
    ])
    .await;
    let event = app
        .publish("orders", shipped(Uuid::now_v7(), "jo@example.com"))
        .await;
    assert_eq!(app.settled(event).await.status, "failed");

    let wanted = [
        r#"notifications_deliveries{channel="email",status="failed",service="notifications"} 1"#,
        r#"notifications_dead_letters{channel="email",service="notifications"} 1"#,
        r#"notifications_backlog{channel="email",service="notifications"} 0"#,
        r#"notifications_suppressed_addresses{service="notifications"} 0"#,
    ];
    let mut text = String::new();
    for _ in 0..100 {
        text = app
            .http
            .get(format!("{}/metrics", app.admin_base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| text.contains(w)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("missing {wanted:?} in\n{text}");
}
