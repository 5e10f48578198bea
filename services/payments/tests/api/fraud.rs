//! Fraud rules before authorization, and admins' reviews.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, authorize, eur, spawn_app};

/// Authorizes `amount` on `card` for a new order of `customer`.
async fn pay(
    app: &mut TestApp,
    customer: Uuid,
    card: &str,
    amount: i64,
) -> (Uuid, crate::helpers::Reply) {
    let mut command = authorize(card, eur(amount));
    command.customer_id = Some(customer);
    let id = command.payment_id;
    (id, app.ask(command).await)
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_sixth_payment_in_ten_minutes_is_declined_without_reaching_the_provider() {
    let mut app = spawn_app().await;
    let customer = Uuid::now_v7();
    for n in 0..5 {
        let (_, reply) = pay(&mut app, customer, "pm_card_visa", 1000).await;
        assert_eq!(reply.name(), "authorized", "payment {n}");
    }
    let (id, reply) = pay(&mut app, customer, "pm_card_visa", 1000).await;
    assert_eq!(reply.name(), "declined");
    assert_eq!(reply.data()["code"], "fraud_blocked");
    let message = reply.data()["message"].as_str().unwrap();
    assert!(
        !message.contains("velocity") && !message.contains("minutes"),
        "{message}"
    );
    let payment = app.payment(id).await;
    assert_eq!(payment["status"], "declined");
    let attempt = &payment["attempts"][0];
    assert_eq!(attempt["code"], "fraud_blocked");
    assert!(
        attempt["provider_reference"].is_null(),
        "the provider was never asked"
    );
    let (verdict, reasons): (String, Value) =
        sqlx::query_as("SELECT verdict, reasons FROM fraud_decisions WHERE payment_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(verdict, "block");
    assert_eq!(reasons[0]["rule"], "velocity");
    // Another customer is not affected.
    let (_, reply) = pay(&mut app, Uuid::now_v7(), "pm_card_visa", 1000).await;
    assert_eq!(reply.name(), "authorized");
}

#[tokio::test]
async fn three_declines_in_a_row_block_the_next_payment_even_with_a_good_card() {
    let mut app = spawn_app().await;
    let customer = Uuid::now_v7();
    for _ in 0..3 {
        let (_, reply) = pay(&mut app, customer, "pm_card_chargeDeclined", 1000).await;
        assert_eq!(reply.data()["code"], "card_declined");
    }
    let (_, reply) = pay(&mut app, customer, "pm_card_visa", 1000).await;
    assert_eq!(reply.name(), "declined");
    assert_eq!(reply.data()["code"], "fraud_blocked");
}

#[tokio::test]
async fn a_large_first_payment_is_authorized_held_for_review_and_decided_by_an_admin() {
    let mut app = spawn_app().await;
    let (id, reply) = pay(&mut app, Uuid::now_v7(), "pm_card_visa", 150_000).await;
    assert_eq!(
        reply.name(),
        "authorized",
        "a review does not stop the payment"
    );
    let (small, _) = pay(&mut app, Uuid::now_v7(), "pm_card_visa", 1_000).await;

    let customer = app
        .get("/v1/payments/fraud-reviews", Some(&app.customer))
        .await;
    assert_eq!(customer.status(), 403);
    let listed: Value = app
        .get("/v1/payments/fraud-reviews", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["payment_id"], json!(id));
    assert_eq!(items[0]["verdict"], "review");
    assert_eq!(items[0]["reasons"][0]["rule"], "first_payment_amount");
    assert!(
        items[0]["reasons"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1500.00 EUR")
    );

    let path = format!("/v1/payments/{id}/review");
    let (status, _) = post(&app, &path, &app.customer, json!({"outcome": "approved"})).await;
    assert_eq!(status, 403);
    let (status, problem) = post(&app, &path, &app.admin, json!({"outcome": "maybe"})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, decided) = post(
        &app,
        &path,
        &app.admin,
        json!({"outcome": "approved", "note": "Known customer, phoned"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["review_outcome"], "approved");
    assert_eq!(decided["review_note"], "Known customer, phoned");
    assert!(decided["reviewed_by"].is_string());
    let (status, _) = post(&app, &path, &app.admin, json!({"outcome": "rejected"})).await;
    assert_eq!(status, 409, "decided once");
    let (status, _) = post(
        &app,
        &format!("/v1/payments/{small}/review"),
        &app.admin,
        json!({"outcome": "approved"}),
    )
    .await;
    assert_eq!(status, 404, "not held for review");
    let (status, _) = post(
        &app,
        "/v1/payments/%00/review",
        &app.admin,
        json!({"outcome": "approved"}),
    )
    .await;
    assert_eq!(status, 404);

    let open: Value = app
        .get("/v1/payments/fraud-reviews", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(open["items"], json!([]));
    let all: Value = app
        .get("/v1/payments/fraud-reviews?decided=true", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let bad = app
        .get(
            "/v1/payments/fraud-reviews?decided=perhaps",
            Some(&app.admin),
        )
        .await;
    assert_eq!(bad.status(), 422);
}
