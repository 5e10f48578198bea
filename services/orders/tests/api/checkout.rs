use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{checkout_body, spawn_app};

#[tokio::test]
async fn checkout_creates_a_pending_order_and_publishes_placed_and_the_reserve_command() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let pen = app
        .products
        .create("Pen", "active", &[("PEN-1", 199), ("PEN-2", 299)])
        .await;
    let body = checkout_body(&[(mug, "MUG-1", 2), (pen, "PEN-2", 3)]);

    let response = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("k-1"),
            Some(&body),
        )
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["tracking_url"], format!("/v1/orders/{id}"));
    assert_eq!(location, format!("/v1/orders/{id}"));
    assert_eq!(
        order["totals"]["total"],
        json!({"amount": 2 * 1250 + 3 * 299, "currency": "EUR"})
    );
    assert_eq!(order["items"][1]["name"], "Pen");
    assert_eq!(order["items"][1]["line_total"]["amount"], 897);

    let placed = app.bus.expect("tienda.order.placed", id).await;
    assert_eq!(placed.data["total"]["amount"], 3397);
    assert_eq!(placed.data["customer_id"], crate::helpers::CUSTOMER);
    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    assert_eq!(reserve.correlation_id, id);
    assert_eq!(reserve.data["order_id"], id.to_string());
    assert_eq!(
        reserve.data["items"],
        json!([{"sku": "MUG-1", "quantity": 2}, {"sku": "PEN-2", "quantity": 3}])
    );
    assert_eq!(app.log(id).await, ["placed"]);
    // The answer is built from what placing wrote, not read back: it must be the order as
    // it reads, field for field.
    assert_eq!(app.order(id).await, order);
}

#[tokio::test]
async fn checkout_without_an_idempotency_key_or_a_token_is_refused() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let body = checkout_body(&[(mug, "MUG-1", 1)]);

    let no_key = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            None,
            Some(&body),
        )
        .await;
    let no_token = app
        .send(Method::POST, "/v1/checkout", None, Some("k"), Some(&body))
        .await;

    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    let problem: Value = no_key.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("idempotency-key-missing")
    );
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_same_order() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let body = checkout_body(&[(mug, "MUG-1", 1)]);

    let first = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("same"),
            Some(&body),
        )
        .await;
    let first: Value = first.json().await.unwrap();
    let again = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("same"),
            Some(&body),
        )
        .await;

    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 1);
}

#[tokio::test]
async fn fifty_concurrent_retries_with_one_key_create_one_order() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let body = checkout_body(&[(mug, "MUG-1", 1)]);

    let answers = futures::future::join_all((0..50).map(|_| async {
        let response = app
            .send(
                Method::POST,
                "/v1/checkout",
                Some(&app.customer),
                Some("fifty"),
                Some(&body),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body)
    }))
    .await;

    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .map(|(_, b)| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one order id across all accepted answers");
    for (status, body) in &answers {
        // The ones that overlapped the first are told to retry; none made a second order.
        assert!(
            *status == StatusCode::ACCEPTED || *status == StatusCode::CONFLICT,
            "{status}: {body}"
        );
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let reserves: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tienda_outbox WHERE subject = 'tienda.inventory.cmd.reserve'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((orders, reserves), (1, 1));
}

#[tokio::test]
async fn unknown_skus_and_products_not_for_sale_are_refused_naming_the_lines() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let old = app
        .products
        .create("Old mug", "archived", &[("OLD-1", 900)])
        .await;
    app.products
        .create("Pen", "active", &[("PEN-1", 150)])
        .await;
    let body = checkout_body(&[
        (mug, "MUG-1", 1),
        (mug, "MUG-9", 1),
        (old, "OLD-1", 1),
        (Uuid::now_v7(), "GONE-1", 1),
        // For sale, but named with another product.
        (mug, "PEN-1", 1),
    ]);

    let response = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("k"),
            Some(&body),
        )
        .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "items[1].sku",
            "items[2].sku",
            "items[3].sku",
            "items[4].product_id"
        ]
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn invalid_fields_and_unknown_fields_are_problems_naming_them() {
    let app = spawn_app().await;
    let mut body = checkout_body(&[(Uuid::now_v7(), "MUG-1", 0)]);
    body["shipping_address"]["country"] = json!("Spain");

    let invalid = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("a"),
            Some(&body),
        )
        .await;
    body["coupon"] = json!("FREE");
    let unknown = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("b"),
            Some(&body),
        )
        .await;

    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        invalid.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = invalid.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["shipping_address.country", "items[0].quantity"]);
    assert!(unknown.status().is_client_error());
    assert!(unknown.text().await.unwrap().contains("coupon"));
}

#[tokio::test]
async fn a_card_number_as_payment_method_is_refused_and_never_stored_or_echoed() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;

    for (i, card) in [
        "4242424242424242",
        "4242-4242-4242-4242",
        "4242.4242.4242.4242",
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = checkout_body(&[(mug, "MUG-1", 1)]);
        body["payment_method"] = json!(card);
        let response = app
            .send(
                Method::POST,
                "/v1/checkout",
                Some(&app.customer),
                Some(&format!("card-{i}")),
                Some(&body),
            )
            .await;

        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{card}"
        );
        let text = response.text().await.unwrap();
        assert!(!text.contains("4242"), "the number is not echoed: {text}");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["errors"][0]["field"], "payment_method");
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM tienda_outbox)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored, 0, "nothing written to the database or the outbox");
}

#[tokio::test]
async fn control_characters_in_any_text_field_are_a_422_naming_it_not_a_500() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;

    for (i, (field, at)) in [
        ("email", "/email"),
        ("shipping_address.name", "/shipping_address/name"),
        ("shipping_address.line1", "/shipping_address/line1"),
        ("shipping_address.line2", "/shipping_address/line2"),
        ("shipping_address.city", "/shipping_address/city"),
        (
            "shipping_address.postal_code",
            "/shipping_address/postal_code",
        ),
        ("shipping_address.country", "/shipping_address/country"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = checkout_body(&[(mug, "MUG-1", 1)]);
        body["shipping_address"]["line2"] = json!("Piso 2");
        *body.pointer_mut(at).unwrap() = json!("E\u{0}S");
        let response = app
            .send(
                Method::POST,
                "/v1/checkout",
                Some(&app.customer),
                Some(&format!("nul-{i}")),
                Some(&body),
            )
            .await;

        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn keys_differing_only_by_a_quote_are_two_checkouts() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let first = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("k1\""),
            Some(&checkout_body(&[(mug, "MUG-1", 1)])),
        )
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let second = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.customer),
            Some("k1"),
            Some(&checkout_body(&[(mug, "MUG-1", 2)])),
        )
        .await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["id"], first["id"], "a new key is a new order");
    assert_eq!(second["items"][0]["quantity"], 2);
}
