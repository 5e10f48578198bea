//! The checkout saga across four processes, through the gateway: orders asks products to
//! reserve the stock and payments to authorize the card, then confirms and commits — or
//! compensates and cancels — and the stock adds up either way.

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tienda_crds::Component::{Orders, Products};
use tienda_e2e::Shop;
use uuid::Uuid;

/// Checks out `quantity` of `sku` paying with `card`; returns the order as answered (202).
async fn checkout(
    shop: &Shop,
    token: &str,
    product_id: &str,
    sku: &str,
    quantity: u32,
    card: &str,
) -> Value {
    let response = shop
        .http
        .post(shop.url(Orders, "/v1/checkout"))
        .bearer_auth(token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "email": "ada@e2e.test",
            "shipping_address": {"name": "Ada Lovelace", "line1": "Calle Mayor 1",
                                 "city": "Madrid", "postal_code": "28013", "country": "ES"},
            "payment_method": card,
            "items": [{"product_id": product_id, "sku": sku, "quantity": quantity}],
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "{body}");
    body
}

/// Browses as a guest, fills a guest cart with `quantity` of `sku`, signs in (the cart merges
/// into the customer's) and checks the cart out; returns the order as answered (202).
async fn browse_cart_and_checkout(shop: &Shop, token: &str, sku: &str, quantity: u32) -> Value {
    let (status, found) = shop
        .get(shop.url(Products, "/v1/products?q=ceramic"), None)
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["items"][0]["variants"][0]["sku"], sku, "{found}");
    let (status, cart) = shop
        .post(shop.url(Orders, "/v1/cart"), None, json!({}))
        .await;
    assert_eq!(status, 201, "{cart}");
    let cart_token = cart["token"].as_str().unwrap().to_owned();
    let added = shop
        .http
        .post(shop.url(Orders, "/v1/cart/items"))
        .header("Cart-Token", &cart_token)
        .json(&json!({"sku": sku, "quantity": quantity}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);
    // Signed in now, still carrying the guest cart's token: it merges.
    let merged: Value = shop
        .http
        .get(shop.url(Orders, "/v1/cart"))
        .bearer_auth(token)
        .header("Cart-Token", &cart_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(merged["items"][0]["sku"], sku, "{merged}");
    assert_eq!(merged["items"][0]["quantity"], quantity, "{merged}");
    let response = shop
        .http
        .post(shop.url(Orders, "/v1/checkout"))
        .bearer_auth(token)
        .header("Idempotency-Key", Uuid::now_v7().to_string())
        .json(&json!({
            "email": "ada@e2e.test",
            "shipping_address": {"name": "Ada Lovelace", "line1": "Calle Mayor 1",
                                 "city": "Madrid", "postal_code": "28013", "country": "ES"},
            "payment_method": "pm_card_visa",
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "{body}");
    body
}

/// Waits until the order reaches a final state of the saga; returns it.
async fn settled(shop: &Shop, token: &str, order: &Value) -> Value {
    let id = order["id"].as_str().expect("the order has an id");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, now) = shop
            .get(shop.url(Orders, &format!("/v1/orders/{id}")), Some(token))
            .await;
        assert_eq!(status, 200, "{now}");
        if matches!(now["status"].as_str(), Some("confirmed" | "cancelled")) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "order {id} stuck at {}:\n{}\n{}",
            now["status"],
            shop.log(Orders),
            shop.log(tienda_crds::Component::Payments)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_paid_checkout_is_confirmed_and_a_declined_or_short_one_cancelled_with_stock_intact() {
    let shop = Shop::start().await;
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Taza de cerámica", "description": "Ceramic mug, 350 ml.",
                   "status": "active", "variants": [
                       {"sku": "MUG-E2E", "attributes": {"colour": "blue"},
                        "price": {"amount": 1250, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let product_id = product["id"].as_str().unwrap().to_owned();
    let stocked = shop
        .http
        .put(shop.url(Products, "/v1/inventory/MUG-E2E"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 10, "reason": "delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 200);
    let stock = || async {
        shop.get(shop.url(Products, "/v1/inventory/MUG-E2E"), None)
            .await
            .1
    };
    let token = shop.customer("ada@e2e.test").await;

    // Browse, cart, sign in, checkout, paid: reserved, authorized, confirmed, stock sold.
    let placed = browse_cart_and_checkout(&shop, &token, "MUG-E2E", 2).await;
    assert_eq!(placed["status"], "pending", "{placed}");
    // The storefront follows it live through the gateway.
    let timeline = shop.url(
        Orders,
        &format!("/v1/orders/{}/timeline", placed["id"].as_str().unwrap()),
    );
    let (status, seen) =
        tienda_e2e::timeline::until_settled(&shop.http, &timeline, &token, Duration::from_secs(30))
            .await
            .unwrap();
    assert_eq!(status, "confirmed");
    assert_eq!(
        seen,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed"
        ]
    );
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stock().await["on_hand"] != 8 {
        assert!(Instant::now() < deadline, "the sale was never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stock().await,
        json!({"sku": "MUG-E2E", "on_hand": 8, "reserved": 0, "available": 8})
    );

    // Declined: the reservation is released, the order cancelled, the stock as it was.
    let placed = checkout(
        &shop,
        &token,
        &product_id,
        "MUG-E2E",
        3,
        "pm_card_chargeDeclined",
    )
    .await;
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stock().await["reserved"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the reservation was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stock().await["available"], 8);

    // More than there is: nothing reserved, nothing charged, cancelled.
    let placed = checkout(&shop, &token, &product_id, "MUG-E2E", 50, "pm_card_visa").await;
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(
        stock().await,
        json!({"sku": "MUG-E2E", "on_hand": 8, "reserved": 0, "available": 8})
    );
    shop.stop().await;
}

/// Waits until `check` holds for the order as its owner reads it.
async fn order_until(
    shop: &Shop,
    token: &str,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, order) = shop
            .get(shop.url(Orders, &format!("/v1/orders/{id}")), Some(token))
            .await;
        assert_eq!(status, 200, "{order}");
        if check(&order) {
            return order;
        }
        assert!(
            Instant::now() < deadline,
            "order {id}: {what} never happened: {order}\n{}",
            shop.log(tienda_crds::Component::Payments)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_the_sale_shipping_charges_a_return_refunds_and_restocks_and_a_cancel_restocks() {
    let shop = Shop::start().await;
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Jarra", "description": "Jug.", "status": "active", "variants": [
                       {"sku": "JUG-E2E", "price": {"amount": 2000, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let product_id = product["id"].as_str().unwrap().to_owned();
    let stocked = shop
        .http
        .put(shop.url(Products, "/v1/inventory/JUG-E2E"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 10, "reason": "delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 200);
    let on_hand = || async {
        shop.get(shop.url(Products, "/v1/inventory/JUG-E2E"), None)
            .await
            .1["on_hand"]
            .as_i64()
            .unwrap()
    };
    let token = shop.customer("grace@e2e.test").await;

    // Bought, shipped (the card is charged), delivered, returned: refunded and restocked.
    let placed = checkout(&shop, &token, &product_id, "JUG-E2E", 2, "pm_card_visa").await;
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    let (status, shipped) = shop
        .post(
            shop.url(Orders, &format!("/v1/orders/{id}/ship")),
            Some(&admin),
            json!({"carrier": "Correos", "tracking_number": "PK-42"}),
        )
        .await;
    assert_eq!(status, 200, "{shipped}");
    order_until(&shop, &token, &id, "capture", |o| {
        o["payment"]["captured"]["amount"] == 4000
    })
    .await;
    let (status, _) = shop
        .post(
            shop.url(Orders, &format!("/v1/orders/{id}/deliver")),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, returned) = shop
        .post(
            shop.url(Orders, &format!("/v1/orders/{id}/returns")),
            Some(&token),
            json!({"items": [{"sku": "JUG-E2E", "quantity": 2}], "reason": "Too big"}),
        )
        .await;
    assert_eq!(status, 201, "{returned}");
    let before = on_hand().await;
    let (status, received) = shop
        .post(
            shop.url(
                Orders,
                &format!(
                    "/v1/orders/{id}/returns/{}/receive",
                    returned["id"].as_str().unwrap()
                ),
            ),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{received}");
    let refunded = order_until(&shop, &token, &id, "refund", |o| o["status"] == "refunded").await;
    assert_eq!(refunded["payment"]["refunded"]["amount"], 4000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_hand().await != before + 2 {
        assert!(Instant::now() < deadline, "the return was never restocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, payments) = shop
        .get(
            shop.url(
                tienda_crds::Component::Payments,
                &format!("/v1/payments?order_id={id}"),
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(payments["items"][0]["status"], "refunded", "{payments}");

    // The capture issued an invoice with the order's lines and the shipping address, the
    // refund a credit note against it; the customer reads both, and the PDF, via the gateway.
    let (status, invoices) = shop
        .get(
            shop.url(
                tienda_crds::Component::Payments,
                &format!("/v1/invoices?order_id={id}"),
            ),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{invoices}");
    let items = invoices["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{invoices}");
    let invoice = items.iter().find(|i| i["kind"] == "invoice").unwrap();
    let note = items.iter().find(|i| i["kind"] == "credit_note").unwrap();
    assert_eq!(invoice["lines"][0]["sku"], "JUG-E2E");
    assert_eq!(invoice["lines"][0]["quantity"], 2);
    assert_eq!(invoice["total"]["amount"], 4000);
    assert_eq!(invoice["customer"]["name"], "Ada Lovelace");
    assert_eq!(note["total"]["amount"], 4000);
    assert_eq!(note["credits"], invoice["number"]);
    let pdf = shop
        .http
        .get(shop.url(
            tienda_crds::Component::Payments,
            invoice["pdf_url"].as_str().unwrap(),
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF-"));

    // Confirmed, then cancelled by the customer: voided, and the sold units back on the shelf.
    let placed = checkout(&shop, &token, &product_id, "JUG-E2E", 3, "pm_card_visa").await;
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let sold = on_hand().await;
    let id = order["id"].as_str().unwrap().to_owned();
    let (status, cancelled) = shop
        .post(
            shop.url(Orders, &format!("/v1/orders/{id}/cancel")),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_hand().await != sold + 3 {
        assert!(
            Instant::now() < deadline,
            "the cancelled sale was never restocked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, payments) = shop
        .get(
            shop.url(
                tienda_crds::Component::Payments,
                &format!("/v1/payments?order_id={id}"),
            ),
            Some(&admin),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut payments = payments;
    while payments["items"][0]["status"] != "voided" {
        assert!(Instant::now() < deadline, "never voided: {payments}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        payments = shop
            .get(
                shop.url(
                    tienda_crds::Component::Payments,
                    &format!("/v1/payments?order_id={id}"),
                ),
                Some(&admin),
            )
            .await
            .1;
    }
    shop.stop().await;
}

/// The Shop file naming Stripe at `api_base`, the keys in the payments component's own env (a
/// local Shop has no Secrets), and a CircuitPolicy on `stripe` that opens after two failures
/// for five seconds (longer than orders' 2 s between retries, so a retry meets it open).
fn on_stripe(dir: &std::path::Path, api_base: &str) {
    let shop = std::fs::read_to_string(dir.join("shop.yaml")).unwrap();
    let shop = format!(
        "{shop}  payments:
    provider: stripe
    stripe:
      apiBase: {api_base}
      secretRef: {{name: stripe-keys}}
  components:
    - name: gateway
    - name: auth
    - name: products
    - name: orders
    - name: payments
      env:
        - {{name: STRIPE_SECRET_KEY, value: {key}}}
    - name: notifications
",
        key = tienda_kit::testing::STRIPE_TEST_KEY
    );
    std::fs::write(dir.join("shop.yaml"), shop).unwrap();
    std::fs::write(
        dir.join("circuitpolicy.yaml"),
        "apiVersion: tienda.dev/v1alpha1
kind: CircuitPolicy
metadata: {name: stripe}
spec:
  targetRef: {kind: External, name: stripe}
  timeout: 2s
  circuitBreaker: {consecutiveFailures: 2, window: 30s, openFor: 5s, halfOpenRequests: 1}
",
    )
    .unwrap();
}

#[tokio::test]
async fn a_shop_on_stripe_takes_orders_and_rides_out_a_stripe_outage() {
    let mut stripe = tienda_kit::testing::LocalStripe::start();
    let api_base = stripe.base();
    let shop = Shop::start_prepared(|dir| on_stripe(dir, &api_base), |_| {}).await;
    let admin = shop.admin_token().await;
    let (status, product) = shop
        .post(
            shop.url(Products, "/v1/products"),
            Some(&admin),
            json!({"name": "Cuenco", "description": "Bowl.", "status": "active", "variants": [
                       {"sku": "BOWL-STRIPE", "price": {"amount": 1800, "currency": "EUR"}}]}),
        )
        .await;
    assert_eq!(status, 201, "{product}");
    let product_id = product["id"].as_str().unwrap().to_owned();
    let stocked = shop
        .http
        .put(shop.url(Products, "/v1/inventory/BOWL-STRIPE"))
        .bearer_auth(&admin)
        .json(&json!({"on_hand": 10, "reason": "delivery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stocked.status(), 200);
    let token = shop.customer("stripe@e2e.test").await;
    let payment_of = |order_id: String| {
        let (shop, admin) = (&shop, &admin);
        async move {
            let (status, payments) = shop
                .get(
                    shop.url(
                        tienda_crds::Component::Payments,
                        &format!("/v1/payments?order_id={order_id}"),
                    ),
                    Some(admin),
                )
                .await;
            assert_eq!(status, 200, "{payments}");
            payments["items"][0].clone()
        }
    };

    // The Shop chose Stripe: the card is held there.
    let placed = checkout(&shop, &token, &product_id, "BOWL-STRIPE", 1, "pm_card_visa").await;
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let payment = payment_of(order["id"].as_str().unwrap().to_owned()).await;
    assert_eq!(payment["provider"], "stripe", "{payment}");
    let intent = payment["provider_reference"].as_str().unwrap();
    assert_eq!(stripe.intent(intent).await["status"], "requires_capture");

    // Stripe goes down: the authorization fails as retryable, the circuit opens, and orders
    // keeps retrying within its window instead of cancelling.
    stripe.stop();
    let placed = checkout(&shop, &token, &product_id, "BOWL-STRIPE", 1, "pm_card_visa").await;
    let id = placed["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    loop {
        let payment = payment_of(id.clone()).await;
        if let Some(payment_id) = payment["id"].as_str() {
            let (_, detail) = shop
                .get(
                    shop.url(
                        tienda_crds::Component::Payments,
                        &format!("/v1/payments/{payment_id}"),
                    ),
                    Some(&admin),
                )
                .await;
            let refused_by_circuit = detail["attempts"].as_array().is_some_and(|attempts| {
                attempts.iter().any(|a| {
                    a["outcome"] == "failed"
                        && a["detail"].as_str().is_some_and(|d| d.contains("circuit"))
                })
            });
            if refused_by_circuit {
                break;
            }
            last = detail;
        }
        assert!(
            Instant::now() < deadline,
            "no authorization refused by the open circuit within 30 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, pending) = shop
        .get(shop.url(Orders, &format!("/v1/orders/{id}")), Some(&token))
        .await;
    assert_ne!(pending["status"], "cancelled", "{pending}");

    // Stripe is back: the circuit closes and the next retry authorizes.
    stripe.restart();
    let order = settled(&shop, &token, &placed).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(payment_of(id).await["status"], "authorized");
}
