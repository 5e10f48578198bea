use pretty_assertions::assert_eq;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, checkout_body, spawn_app};

/// The checkout body without items: check out the cart.
fn from_cart() -> Value {
    let mut body = checkout_body(&[]);
    body.as_object_mut().unwrap().remove("items");
    body
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    cart: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let response = app
        .send_with_cart(method.clone(), path, token, cart, None, body.as_ref())
        .await;
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return (status, Value::Null);
    }
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    if status.is_client_error() {
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
    }
    (status, response.json().await.unwrap())
}

fn skus_and_quantities(cart: &Value) -> Vec<(String, u64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn orders_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_guest_cart_is_found_by_its_token_and_priced_at_read_time() {
    let app = spawn_app().await;
    app.products
        .create("Mug", "active", &[("MUG-1", 1250)])
        .await;
    app.products
        .create("Secret", "draft", &[("SECRET-1", 100)])
        .await;
    app.products.stock("MUG-1", 5).await;

    // No token and no sign-in: told what to send.
    let (status, problem) = call(&app, Method::GET, "/v1/cart", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(problem["detail"].as_str().unwrap().contains("Cart-Token"));
    let (status, _) = call(&app, Method::GET, "/v1/cart", None, Some("ct_nope"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, created) = call(&app, Method::POST, "/v1/cart", None, None, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ct_"));
    assert_eq!(created["items"], json!([]));
    // The token is not stored, only its digest.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM carts WHERE token_hash = $1")
        .bind(token.as_bytes())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let t = Some(token.as_str());

    let (status, cart) = call(
        &app,
        Method::POST,
        "/v1/cart/items",
        None,
        t,
        Some(json!({"sku": "MUG-1", "quantity": 2})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cart}");
    assert_eq!(cart["id"], created["id"]);
    assert!(cart.get("token").is_none(), "the token is shown once");
    let line = &cart["items"][0];
    assert_eq!(line["name"], "Mug");
    assert_eq!(
        line["unit_price"],
        json!({"amount": 1250, "currency": "EUR"})
    );
    assert_eq!(line["seen_unit_price"], line["unit_price"]);
    assert_eq!(line["price_changed"], false);
    assert_eq!(line["for_sale"], true);
    assert_eq!(line["available"], 5);
    assert_eq!(
        cart["totals"]["total"],
        json!({"amount": 2500, "currency": "EUR"})
    );

    // Adding more of a line adds units; beyond the stock is refused, saying how many.
    let (status, problem) = call(
        &app,
        Method::POST,
        "/v1/cart/items",
        None,
        t,
        Some(json!({"sku": "MUG-1", "quantity": 4})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        problem["type"].as_str().unwrap().rsplit('/').next(),
        Some("insufficient-stock")
    );
    assert_eq!(problem["available"], 5);
    let (_, cart) = call(&app, Method::GET, "/v1/cart", None, t, None).await;
    assert_eq!(
        skus_and_quantities(&cart),
        [("MUG-1".into(), 2)],
        "nothing changed"
    );

    // What cannot be bought is refused naming the field.
    for (body, field) in [
        (json!({"sku": "NOPE-1", "quantity": 1}), "sku"),
        (json!({"sku": "SECRET-1", "quantity": 1}), "sku"),
        (json!({"sku": "MUG 1", "quantity": 1}), "sku"),
        (json!({"sku": "MUG-1", "quantity": 0}), "quantity"),
        (json!({"sku": "MUG-1", "quantity": 101}), "quantity"),
    ] {
        let (status, problem) = call(
            &app,
            Method::POST,
            "/v1/cart/items",
            None,
            t,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/cart/items",
        None,
        t,
        Some(json!({"sku": "MUG-1", "quantity": 1, "price": 1})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );

    // Set a line's units; a missing line is 404.
    let (status, cart) = call(
        &app,
        Method::PATCH,
        "/v1/cart/items/MUG-1",
        None,
        t,
        Some(json!({"quantity": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(skus_and_quantities(&cart), [("MUG-1".into(), 5)]);
    let (status, _) = call(
        &app,
        Method::PATCH,
        "/v1/cart/items/MUG-1",
        None,
        t,
        Some(json!({"quantity": 6})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "beyond stock");
    let (status, _) = call(
        &app,
        Method::PATCH,
        "/v1/cart/items/PEN-1",
        None,
        t,
        Some(json!({"quantity": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, cart) = call(&app, Method::DELETE, "/v1/cart/items/MUG-1", None, t, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["items"], json!([]));
    assert!(cart.get("totals").is_none());
    let (status, _) = call(&app, Method::DELETE, "/v1/cart/items/MUG-1", None, t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleting a guest cart ends its token.
    let (status, _) = call(&app, Method::DELETE, "/v1/cart", None, t, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&app, Method::GET, "/v1/cart", None, t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A token that is not a customer's and a bad bearer token are never a guest.
    let (status, _) = call(&app, Method::GET, "/v1/cart", Some("not-a-jwt"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_price_change_is_reported_and_checkout_waits_for_the_customer_to_accept_it() {
    let app = spawn_app().await;
    app.products
        .create("Mug", "active", &[("MUG-1", 1000)])
        .await;
    app.products
        .create("Pen", "active", &[("PEN-1", 150)])
        .await;
    app.products.stock("MUG-1", 10).await;
    app.products.stock("PEN-1", 10).await;
    let me = Some(app.customer.as_str());
    for (sku, quantity) in [("MUG-1", 2), ("PEN-1", 1)] {
        let (status, cart) = call(
            &app,
            Method::POST,
            "/v1/cart/items",
            me,
            None,
            Some(json!({"sku": sku, "quantity": quantity})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{cart}");
    }

    app.products.set_price("MUG-1", 1200).await;

    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    let mug = &cart["items"][0];
    assert_eq!(mug["seen_unit_price"]["amount"], 1000);
    assert_eq!(mug["unit_price"]["amount"], 1200);
    assert_eq!(mug["price_changed"], true);
    assert_eq!(cart["items"][1]["price_changed"], false);
    assert_eq!(
        cart["price_changes"],
        json!([{"sku": "MUG-1", "name": "Mug",
                "seen": {"amount": 1000, "currency": "EUR"},
                "current": {"amount": 1200, "currency": "EUR"}}])
    );

    // Checkout refuses, naming the line, and changes nothing.
    let refused = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("first"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("price-changed"));
    assert_eq!(problem["lines"][0]["sku"], "MUG-1");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("Mug (10.00 EUR → 12.00 EUR)"), "{detail}");
    assert!(detail.contains("accept_prices"), "{detail}");
    assert_eq!(orders_count(&app).await, 0);
    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    assert_eq!(
        cart["items"].as_array().unwrap().len(),
        2,
        "the cart is kept"
    );

    // The customer accepts; the same key now places the order at the new price.
    let (status, cart) = call(
        &app,
        Method::PATCH,
        "/v1/cart",
        me,
        None,
        Some(json!({"accept_prices": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cart["price_changes"], json!([]));
    assert_eq!(cart["items"][0]["seen_unit_price"]["amount"], 1200);
    let placed = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("first"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let order: Value = placed.json().await.unwrap();
    assert_eq!(order["totals"]["total"]["amount"], 2 * 1200 + 150);
    assert_eq!(order["items"][0]["sku"], "MUG-1");

    // The cart is empty: checking it out again (a double click) places nothing.
    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    assert_eq!(cart["items"], json!([]));
    let again = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("second"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items");
    // A retry with the first key answers the first order.
    let retried = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("first"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["id"], order["id"]);
    assert_eq!(orders_count(&app).await, 1);
}

#[tokio::test]
async fn a_line_no_longer_for_sale_is_named_at_checkout() {
    let app = spawn_app().await;
    let mug = app
        .products
        .create("Mug", "active", &[("MUG-1", 1000), ("MUG-2", 1100)])
        .await;
    app.products.stock("MUG-2", 3).await;
    let me = Some(app.customer.as_str());
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/cart/items",
        me,
        None,
        Some(json!({"sku": "MUG-2", "quantity": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The admin deletes the product.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/products/{mug}", app.products.base);
    let read = http.get(&url).send().await.unwrap();
    let etag = read.headers()["etag"].clone();
    let response = http
        .delete(&url)
        .bearer_auth(app.products.admin_token())
        .header("If-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    assert_eq!(cart["items"][0]["for_sale"], false);
    assert!(cart["items"][0].get("unit_price").is_none());
    assert!(cart.get("totals").is_none());
    let refused = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("k"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items[0].sku");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("MUG-2")
    );
    assert_eq!(orders_count(&app).await, 0);
}

#[tokio::test]
async fn a_guest_cart_merges_into_the_customers_on_sign_in_capped_by_stock() {
    let app = spawn_app().await;
    app.products
        .create("Mug", "active", &[("MUG-1", 1000)])
        .await;
    app.products
        .create("Pen", "active", &[("PEN-1", 150)])
        .await;
    app.products.stock("MUG-1", 4).await;
    app.products.stock("PEN-1", 10).await;
    let me = Some(app.customer.as_str());
    call(
        &app,
        Method::POST,
        "/v1/cart/items",
        me,
        None,
        Some(json!({"sku": "MUG-1", "quantity": 2})),
    )
    .await;
    let (_, guest) = call(&app, Method::POST, "/v1/cart", None, None, None).await;
    let token = guest["token"].as_str().unwrap().to_owned();
    let t = Some(token.as_str());
    for (sku, quantity) in [("MUG-1", 3), ("PEN-1", 1)] {
        let (status, _) = call(
            &app,
            Method::POST,
            "/v1/cart/items",
            None,
            t,
            Some(json!({"sku": sku, "quantity": quantity})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Stock falls after the guest added the mugs.
    app.products.stock("MUG-1", 3).await;

    // Signed in, still carrying the guest's token: the carts merge, line by line.
    let (status, cart) = call(&app, Method::GET, "/v1/cart", me, t, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        skus_and_quantities(&cart),
        [("MUG-1".into(), 3), ("PEN-1".into(), 1)],
        "2 + 3 mugs capped by the 3 in stock"
    );
    // The guest cart is gone; merging again changes nothing.
    let (status, _) = call(&app, Method::GET, "/v1/cart", None, t, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, again) = call(&app, Method::GET, "/v1/cart", me, t, None).await;
    assert_eq!(skus_and_quantities(&again), skus_and_quantities(&cart));

    // Another customer never sees it.
    let (_, theirs) = call(
        &app,
        Method::GET,
        "/v1/cart",
        Some(&app.other_customer),
        None,
        None,
    )
    .await;
    assert_eq!(theirs["items"], json!([]));
    assert_ne!(theirs["id"], cart["id"]);
}

#[tokio::test]
async fn concurrent_checkouts_of_one_cart_place_one_order() {
    let app = spawn_app().await;
    app.products
        .create("Mug", "active", &[("MUG-1", 1000)])
        .await;
    app.products.stock("MUG-1", 10).await;
    let me = Some(app.customer.as_str());
    call(
        &app,
        Method::POST,
        "/v1/cart/items",
        me,
        None,
        Some(json!({"sku": "MUG-1", "quantity": 1})),
    )
    .await;
    let body = from_cart();
    // Twenty double clicks, each with its own key.
    let answers = futures::future::join_all((0..20).map(|i| {
        let app = &app;
        let body = &body;
        async move {
            app.send(
                Method::POST,
                "/v1/checkout",
                Some(&app.customer),
                Some(&format!("click-{i}")),
                Some(body),
            )
            .await
            .status()
        }
    }))
    .await;
    let placed = answers
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(placed, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || s.is_client_error()),
        "{answers:?}"
    );
    assert_eq!(orders_count(&app).await, 1);
}

#[tokio::test]
async fn a_declined_card_puts_the_lines_back_in_the_cart_to_try_another() {
    let app = spawn_app().await;
    app.products
        .create("Mug", "active", &[("MUG-1", 1000)])
        .await;
    app.products.stock("MUG-1", 10).await;
    let me = Some(app.customer.as_str());
    call(
        &app,
        Method::POST,
        "/v1/cart/items",
        me,
        None,
        Some(json!({"sku": "MUG-1", "quantity": 2})),
    )
    .await;
    let placed = app
        .send(
            Method::POST,
            "/v1/checkout",
            me,
            Some("k"),
            Some(&from_cart()),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let order: Value = placed.json().await.unwrap();
    let id: uuid::Uuid = order["id"].as_str().unwrap().parse().unwrap();
    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    assert_eq!(cart["items"], json!([]), "emptied by the checkout");

    let reserve = app.bus.expect("tienda.inventory.cmd.reserve", id).await;
    let reserved = tienda_events::inventory::InventoryReserved {
        reservation_id: reserve.data["reservation_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        order_id: Some(id),
        items: vec![tienda_events::inventory::Line {
            sku: "MUG-1".into(),
            quantity: 2,
        }],
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
    };
    app.reply("products", reserved, &reserve).await;
    let authorize = app.bus.expect("tienda.payment.cmd.authorize", id).await;
    let declined = tienda_events::payment::PaymentDeclined {
        payment_id: authorize.data["payment_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        order_id: id,
        code: "card_declined".into(),
        message: "Your card was declined.".into(),
    };
    app.reply("payments", declined, &authorize).await;
    app.wait_for_status(id, "cancelled").await;

    let (_, cart) = call(&app, Method::GET, "/v1/cart", me, None, None).await;
    assert_eq!(skus_and_quantities(&cart), [("MUG-1".into(), 2)]);
    assert_eq!(cart["items"][0]["seen_unit_price"]["amount"], 1000);
    // Checked out again with another card: a second order, from the restored cart.
    let mut body = from_cart();
    body["payment_method"] = json!("pm_card_mastercard");
    let again = app
        .send(Method::POST, "/v1/checkout", me, Some("k2"), Some(&body))
        .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
}
