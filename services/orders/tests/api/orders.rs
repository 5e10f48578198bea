use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, checkout_body, spawn_app};

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

async fn list(app: &TestApp, token: &str, query: &str) -> (StatusCode, Value) {
    let response = app
        .send(
            Method::GET,
            &format!("/v1/orders{query}"),
            Some(token),
            None,
            None,
        )
        .await;
    (response.status(), response.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn admins_list_every_order_filtered_by_status_customer_and_date() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    let mine = app.place(&checkout_body(&[(mug, "MUG-1", 1)])).await;
    let before_theirs = chrono::Utc::now();
    let theirs = app
        .send(
            Method::POST,
            "/v1/checkout",
            Some(&app.other_customer),
            Some("theirs"),
            Some(&checkout_body(&[(mug, "MUG-1", 2)])),
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    let theirs: Value = theirs.json().await.unwrap();
    let cancelled = app
        .send(
            Method::POST,
            &format!("/v1/orders/{}/cancel", mine["id"].as_str().unwrap()),
            Some(&app.customer),
            None,
            None,
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let (mine_id, theirs_id) = (
        mine["id"].as_str().unwrap().to_owned(),
        theirs["id"].as_str().unwrap().to_owned(),
    );

    let (status, all) = list(&app, &app.admin, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all), [theirs_id.as_str(), mine_id.as_str()]);
    let (_, page) = list(&app, &app.admin, "?status=cancelled").await;
    assert_eq!(ids(&page), [mine_id.as_str()]);
    let (_, page) = list(&app, &app.admin, "?status=pending").await;
    assert_eq!(ids(&page), [theirs_id.as_str()]);
    let (_, page) = list(
        &app,
        &app.admin,
        &format!("?customer_id={}", crate::helpers::OTHER_CUSTOMER),
    )
    .await;
    assert_eq!(ids(&page), [theirs_id.as_str()]);
    let at = before_theirs.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (_, page) = list(&app, &app.admin, &format!("?from={at}")).await;
    assert_eq!(ids(&page), [theirs_id.as_str()]);
    let (_, page) = list(&app, &app.admin, &format!("?to={at}")).await;
    assert_eq!(ids(&page), [mine_id.as_str()]);
    let (_, page) = list(&app, &app.admin, "?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = list(&app, &app.admin, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(ids(&next), [mine_id.as_str()]);
    assert!(next["next_cursor"].is_null());

    // A customer filters only their own orders, and may not ask for someone else's.
    let (_, page) = list(&app, &app.customer, "?status=pending").await;
    assert!(ids(&page).is_empty());
    let (status, _) = list(
        &app,
        &app.customer,
        &format!("?customer_id={}", crate::helpers::OTHER_CUSTOMER),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    for bad in [
        "?status=lost",
        "?from=yesterday",
        "?customer_id=7",
        "?limit=1&limit=2",
        "?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
    ] {
        let (status, problem) = list(&app, &app.admin, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {problem}");
    }
    // A NUL anywhere in the URL is refused by the kit before any handler: a 4xx, never a 500.
    let (status, problem) = list(&app, &app.admin, "?status=%00").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
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
        "GET /v1/orders/{id}/timeline",
        "GET /v1/orders/{id}/returns",
        "POST /v1/orders/{id}/returns",
        "POST /v1/orders/{id}/returns/{return_id}/receive",
        "GET /v1/cart",
        "POST /v1/cart",
        "PATCH /v1/cart",
        "DELETE /v1/cart",
        "POST /v1/cart/items",
        "PATCH /v1/cart/items/{sku}",
        "DELETE /v1/cart/items/{sku}",
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
