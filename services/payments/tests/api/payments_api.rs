use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{authorize, eur, spawn_app};

#[tokio::test]
async fn admins_list_an_orders_payments_in_pages_and_nobody_else_can() {
    let mut app = spawn_app().await;
    let order = Uuid::now_v7();
    let mut ids = Vec::new();
    for card in ["pm_card_chargeDeclined", "pm_card_visa", "pm_card_visa"] {
        let mut command = authorize(card, eur(1200));
        command.order_id = order;
        app.ask(command.clone()).await;
        ids.push(command.payment_id);
    }
    app.authorize("pm_card_visa", 50).await; // another order

    let first: Value = app
        .get(
            &format!("/v1/payments?order_id={order}&limit=2"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(
            &format!("/v1/payments?order_id={order}&limit=2&cursor={cursor}"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();

    let listed: Vec<Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(listed, ids.iter().map(|id| json!(id)).collect::<Vec<_>>());
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(first["items"][0]["status"], "declined");
    assert_eq!(first["items"][0]["decline"]["code"], "card_declined");
    assert_eq!(
        first["items"][1]["amount"],
        json!({"amount": 1200, "currency": "EUR"})
    );

    let path = format!("/v1/payments?order_id={order}");
    assert_eq!(
        app.get(&path, Some(&app.customer)).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&path, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get(&format!("/v1/payments/{}", ids[1]), Some(&app.customer))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bad_list_parameters_and_unknown_payments_are_problems_naming_what_is_wrong() {
    let app = spawn_app().await;

    let bad = app
        .get(
            "/v1/payments?order_id=nope&limit=1000&colour=red",
            Some(&app.admin),
        )
        .await;
    let unknown = app
        .get(
            &format!("/v1/payments/{}", Uuid::now_v7()),
            Some(&app.admin),
        )
        .await;
    let not_an_id = app.get("/v1/payments/not-an-id", Some(&app.admin)).await;

    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: Value = bad.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["order_id", "limit", "colour"]);
    for response in [unknown, not_an_id] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_payment_endpoints() {
    let app = spawn_app().await;

    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();

    // Also checks every $ref resolves and every path parameter and security scheme exists.
    let operations = tienda_kit::testing::check_openapi(&doc);

    assert_eq!(
        operations,
        [
            "GET /livez",
            "GET /readyz",
            "GET /v1/invoices",
            "GET /v1/invoices/{file}",
            "GET /v1/payments",
            "GET /v1/payments/analytics",
            "GET /v1/payments/fraud-reviews",
            "GET /v1/payments/reconciliations/{day}",
            "GET /v1/payments/{id}",
            "GET /v1/payments/{id}/challenges/{token}",
            "POST /v1/payments/reconciliations/{day}",
            "POST /v1/payments/{id}/challenges/{token}",
            "POST /v1/payments/{id}/review",
            "POST /v1/webhooks/{provider}",
        ]
    );
    assert_eq!(
        doc["paths"]["/v1/payments"]["get"]["security"],
        json!([{"bearer": []}])
    );
}
