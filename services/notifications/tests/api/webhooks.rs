//! Outbound webhooks: signed, once per event and endpoint, retried, throttled by the
//! receiver's Retry-After, and never to a private address unless allowed.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    response::IntoResponse,
    routing::post,
};
use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tienda_events::{
    Envelope,
    order::{OrderPlaced, OrderShipped},
};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// A receiver that answers from a script (then 200) and records every request.
#[derive(Default)]
struct Receiver {
    script: VecDeque<(u16, Option<&'static str>)>,
    seen: Vec<(HeaderMap, Bytes)>,
}

type Shared = Arc<Mutex<Receiver>>;

async fn receive(State(r): State<Shared>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let mut r = r.lock().unwrap();
    r.seen.push((headers, body));
    let (status, retry_after) = r.script.pop_front().unwrap_or((200, None));
    let mut answer = (AxumStatus::from_u16(status).unwrap(), "ok").into_response();
    if let Some(seconds) = retry_after {
        answer
            .headers_mut()
            .insert("retry-after", seconds.parse().unwrap());
    }
    answer
}

async fn start_receiver(script: &[(u16, Option<&'static str>)]) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Receiver {
        script: script.iter().copied().collect(),
        seen: Vec::new(),
    }));
    let router = Router::new()
        .route("/hooks", post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, shared)
}

async fn admin_call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let admin = app.issuer.token(&Uuid::now_v7().to_string(), &["admin"]);
    let response = app.send(method, path, Some(&admin), body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers `url` for `types`; the endpoint's id and secret.
async fn register(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let (status, created) = admin_call(
        app,
        Method::POST,
        "/v1/notifications/webhooks",
        Some(json!({"url": url, "event_types": types, "description": "CRM"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

fn shipped() -> OrderShipped {
    OrderShipped {
        order_id: Uuid::now_v7(),
        customer_id: None,
        email: "hal@example.com".into(),
        carrier: "Correos".into(),
        tracking_number: "PK9".into(),
    }
}

/// The webhook delivery of `event` to endpoint `endpoint`, once settled: status, attempts,
/// last error.
async fn webhook_delivery(
    app: &TestApp,
    event: Uuid,
    endpoint: &str,
) -> (Uuid, String, i32, Option<String>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = sqlx::query_as(
            "SELECT id, status, attempts, last_error FROM deliveries
             WHERE event_id = $1 AND channel = 'webhook' AND recipient = $2
               AND status <> 'queued'",
        )
        .bind(event)
        .bind(endpoint)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if let Some(found) = found {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook delivery of {event} did not settle"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_subscribed_event_reaches_the_endpoint_signed_and_once() {
    let app = spawn_app_with(&["--webhooks-allow-private=true"]).await;
    let (url, receiver) = start_receiver(&[]).await;
    let (endpoint, secret) = register(&app, &url, &["order.shipped"]).await;

    let envelope = Envelope::new("orders", shipped());
    app.publish_as(&envelope, &envelope.id.to_string()).await;
    let (delivery, status, attempts, _) = webhook_delivery(&app, envelope.id, &endpoint).await;
    assert_eq!((status.as_str(), attempts), ("sent", 1));

    let (headers, body) = receiver.lock().unwrap().seen[0].clone();
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&body, &headers)
        .expect("signed with the endpoint's secret");
    assert_eq!(headers["webhook-id"], delivery.to_string().as_str());
    assert_eq!(headers["content-type"], "application/json");
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(sent["type"], "order.shipped");
    assert_eq!(sent["id"], json!(envelope.id));
    assert_eq!(sent["data"]["tracking_number"], "PK9");

    // Published again under another message id, and an event the endpoint did not ask for.
    app.publish_as(&envelope, &Uuid::now_v7().to_string()).await;
    app.publish(
        "orders",
        OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id: None,
            email: "hal@example.com".into(),
            items: vec![],
            total: serde_json::from_value(json!({"amount": 1, "currency": "EUR"})).unwrap(),
        },
    )
    .await;
    app.drained("ORDER", "notifications-order-events").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        receiver.lock().unwrap().seen.len(),
        1,
        "once per event and endpoint"
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_and_its_retry_after_is_honoured_without_an_attempt() {
    let app = spawn_app_with(&[
        "--webhooks-allow-private=true",
        "--max-attempts=3",
        "--retry-base-ms=10",
        "--retry-max-ms=20",
    ])
    .await;
    let (url, receiver) = start_receiver(&[(500, None), (429, Some("1"))]).await;
    let (endpoint, _) = register(&app, &url, &["order.shipped"]).await;

    let event = app.publish("orders", shipped()).await;
    let (delivery, status, attempts, _) = webhook_delivery(&app, event, &endpoint).await;

    assert_eq!(status, "sent");
    assert_eq!(attempts, 2, "the throttled call did not count");
    let seen = receiver.lock().unwrap().seen.clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(h, _)| h["webhook-id"] == delivery.to_string().as_str()),
        "one id for every try, so the receiver can deduplicate"
    );
    let history: Vec<String> =
        sqlx::query_scalar("SELECT status FROM delivery_events WHERE delivery_id = $1 ORDER BY id")
            .bind(delivery)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(history, ["queued", "retrying", "throttled", "sent"]);
}

#[tokio::test]
async fn a_private_address_is_refused_unless_allowed_and_bad_endpoints_are_problems() {
    let app = spawn_app().await;
    let (url, receiver) = start_receiver(&[]).await;
    let (endpoint, _) = register(&app, &url, &["order.shipped"]).await;

    let event = app.publish("orders", shipped()).await;
    let (_, status, attempts, error) = webhook_delivery(&app, event, &endpoint).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1), "not retried");
    let error = error.unwrap();
    assert!(
        error.contains("127.0.0.1") && error.contains("NOTIFICATIONS_WEBHOOKS_ALLOW_PRIVATE"),
        "{error}"
    );
    assert!(receiver.lock().unwrap().seen.is_empty(), "never called");

    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "event_types": ["order.shipped"]}),
            "url",
        ),
        (
            json!({"url": "https://x.example/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://x.example/", "event_types": ["user.password_reset_requested"]}),
            "event_types[0]",
        ),
    ] {
        let (status, problem) =
            admin_call(&app, Method::POST, "/v1/notifications/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(problem.to_string().contains(field), "{problem}");
    }
    let customer = app.issuer.token(&Uuid::now_v7().to_string(), &["customer"]);
    let refused = app
        .send(
            Method::GET,
            "/v1/notifications/webhooks",
            Some(&customer),
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_receiver_answering_gone_disables_its_endpoint() {
    let app = spawn_app_with(&["--webhooks-allow-private=true"]).await;
    let (url, receiver) = start_receiver(&[(410, None)]).await;
    let (endpoint, _) = register(&app, &url, &["order.shipped"]).await;

    let event = app.publish("orders", shipped()).await;
    let (_, status, _, _) = webhook_delivery(&app, event, &endpoint).await;
    assert_eq!(status, "failed");
    let (_, read) = admin_call(
        &app,
        Method::GET,
        &format!("/v1/notifications/webhooks/{endpoint}"),
        None,
    )
    .await;
    assert_eq!(read["active"], false);
    assert!(read["disabled_reason"].as_str().unwrap().contains("410"));
    assert!(
        read.get("secret").is_none(),
        "the secret is shown only when made"
    );

    let next = app.publish("orders", shipped()).await;
    app.drained("ORDER", "notifications-order-events").await;
    let webhooks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE event_id = $1 AND channel = 'webhook'",
    )
    .bind(next)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(webhooks, 0);
    assert_eq!(receiver.lock().unwrap().seen.len(), 1);

    let (status, rotated) = admin_call(
        &app,
        Method::POST,
        &format!("/v1/notifications/webhooks/{endpoint}/rotate-secret"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(rotated["secret"].as_str().unwrap().starts_with("whsec_"));
}
