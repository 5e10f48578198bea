use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{checkout_body, spawn_app};

#[tokio::test]
async fn another_customer_s_order_is_not_found_but_an_admin_sees_it() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 1).await;
    let path = format!("/v1/orders/{id}");

    let other = app
        .send(Method::GET, &path, Some(&app.other_customer), None, None)
        .await;
    let admin = app
        .send(Method::GET, &path, Some(&app.admin), None, None)
        .await;
    let garbage = app
        .send(
            Method::GET,
            "/v1/orders/nope",
            Some(&app.customer),
            None,
            None,
        )
        .await;

    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    assert_eq!(admin.status(), StatusCode::OK);
    assert_eq!(garbage.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn my_orders_are_listed_newest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        let order = app.place(&checkout_body(&[(mug, "MUG-1", 1)])).await;
        placed.push(order["id"].as_str().unwrap().to_owned());
    }
    placed.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orders?limit=2&cursor={c}"),
            None => "/v1/orders?limit=2".to_owned(),
        };
        let page: Value = app
            .send(Method::GET, &path, Some(&app.customer), None, None)
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let others: Value = app
        .send(
            Method::GET,
            "/v1/orders",
            Some(&app.other_customer),
            None,
            None,
        )
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(seen, placed);
    assert_eq!(others["items"].as_array().unwrap().len(), 0);
    let bad = app
        .send(
            Method::GET,
            "/v1/orders?limit=0&sort=x",
            Some(&app.customer),
            None,
            None,
        )
        .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation_and_resolves() {
    let app = spawn_app().await;

    let doc: Value = app
        .send(Method::GET, "/openapi.json", None, None, None)
        .await
        .json()
        .await
        .unwrap();

    let operations = tienda_kit::testing::check_openapi(&doc);
    for op in [
        "POST /v1/checkout",
        "GET /v1/orders",
        "GET /v1/orders/{id}",
        "POST /v1/orders/{id}/cancel",
        "POST /v1/orders/{id}/ship",
        "POST /v1/orders/{id}/deliver",
    ] {
        assert!(operations.iter().any(|o| o == op), "{op} in {operations:?}");
    }
    let action = &doc["components"]["schemas"]["PaymentAction"]["properties"];
    assert!(
        action["url"].is_object() && action["expires_at"].is_object(),
        "{action}"
    );
    assert!(
        doc["components"]["schemas"]["Order"]["properties"]["payment_action"].is_object(),
        "the order documents the challenge"
    );
}

#[tokio::test]
async fn the_placed_log_entry_holds_what_rebuilds_the_order() {
    let app = spawn_app().await;
    let id = app.placed_order("MUG-1", 1250, 3).await;
    let order = app.order(id).await;

    let placed: Value =
        sqlx::query_scalar("SELECT data FROM order_events WHERE order_id = $1 AND kind = 'placed'")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();

    assert_eq!(placed["currency"], "EUR");
    assert_eq!(placed["subtotal"], order["totals"]["subtotal"]);
    assert_eq!(placed["total"], order["totals"]["total"]);
    assert_eq!(placed["payment_method"], "pm_card_visa");
    let line = &placed["lines"][0];
    let item = &order["items"][0];
    for key in ["product_id", "sku", "name", "quantity", "unit_price"] {
        assert_eq!(line[key], item[key], "{key}");
    }
    assert_eq!(placed["lines"].as_array().unwrap().len(), 1);
}
