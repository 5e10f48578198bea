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
    assert_eq!(
        status, 400,
        "a NUL in the URL is refused before any handler"
    );

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

/// The fraud decision stored for payment `id`: the verdict and the rules that spoke.
async fn decision(app: &TestApp, id: Uuid) -> (String, Vec<String>, Value) {
    let (verdict, reasons): (String, Value) =
        sqlx::query_as("SELECT verdict, reasons FROM fraud_decisions WHERE payment_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let rules = reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect();
    (verdict, rules, reasons)
}

/// Authorizes 10.00 EUR on `card` for a new customer, from `client_ip` with a billing
/// address in `billing`.
async fn pay_from(
    app: &mut TestApp,
    card: &str,
    client_ip: &str,
    billing: &str,
) -> (Uuid, crate::helpers::Reply) {
    let mut command = authorize(card, eur(1_000));
    command.client_ip = Some(client_ip.into());
    command.billing_country = Some(billing.into());
    let id = command.payment_id;
    (id, app.ask(command).await)
}

#[tokio::test]
async fn a_card_paying_for_several_customers_is_reviewed_then_blocked() {
    use tienda_payments::provider::sandbox::SHARED_CARD;
    let mut app = spawn_app().await;
    let mut verdicts = Vec::new();
    for n in 0..5 {
        let ip = format!("198.51.100.{n}");
        let (id, reply) = pay_from(&mut app, SHARED_CARD, &ip, "US").await;
        verdicts.push((reply.name().to_owned(), decision(&app, id).await.0));
    }
    let expected = [
        ("authorized", "allow"),
        ("authorized", "allow"),
        ("authorized", "review"),
        ("authorized", "review"),
        ("declined", "block"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).into(), (*b).into()))
        .collect();
    assert_eq!(verdicts, expected);
    // The fingerprint is the card's, stored with each payment.
    let cards: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT card_fingerprint) FROM payments WHERE card_fingerprint IS NOT NULL",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(cards, 1);
    // The same test card is every customer's own otherwise: many customers, no review.
    for n in 0..5 {
        let (id, reply) =
            pay_from(&mut app, "pm_card_visa", &format!("198.51.100.{n}"), "US").await;
        assert_eq!(reply.name(), "authorized");
        assert_eq!(decision(&app, id).await.0, "allow");
    }
}

#[tokio::test]
async fn a_fifth_card_from_one_address_in_an_hour_is_blocked_as_card_testing() {
    let mut app = spawn_app().await;
    for n in 0..4 {
        let (id, reply) = pay_from(&mut app, "pm_card_visa", "198.51.100.9", "US").await;
        assert_eq!(reply.name(), "authorized", "card {n}");
        assert_eq!(decision(&app, id).await.0, "allow");
    }
    let (id, reply) = pay_from(&mut app, "pm_card_mastercard", "198.51.100.9", "US").await;
    assert_eq!(reply.name(), "declined");
    assert_eq!(reply.data()["code"], "fraud_blocked");
    let (verdict, rules, reasons) = decision(&app, id).await;
    assert_eq!(
        (verdict.as_str(), rules),
        ("block", vec!["card_testing".to_owned()])
    );
    assert!(
        reasons[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("5 different cards"),
        "{reasons}"
    );
    // A local run or a proxy nobody configured: every customer shares the address, which
    // then says nothing.
    for _ in 0..6 {
        let (id, reply) = pay_from(&mut app, "pm_card_visa", "127.0.0.1", "US").await;
        assert_eq!(reply.name(), "authorized");
        assert_eq!(decision(&app, id).await.0, "allow");
    }
}

#[tokio::test]
async fn countries_of_card_billing_address_and_ip_that_disagree_hold_the_payment_for_review() {
    let dir = std::env::temp_dir().join(format!("tienda-geoip-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("dbip-country-lite.csv");
    std::fs::write(
        &csv,
        "198.51.100.0,198.51.100.255,ES\n203.0.113.0,203.0.113.255,BR\n",
    )
    .unwrap();
    let mut app =
        crate::helpers::spawn_app_with(&[&format!("--geoip-csv={}", csv.display())]).await;

    // A Spanish card, a Spanish billing address, from Spain.
    let (id, reply) = pay_from(&mut app, "pm_card_es", "198.51.100.1", "ES").await;
    assert_eq!(reply.name(), "authorized");
    assert_eq!(decision(&app, id).await.0, "allow");
    let payment: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT card_country, billing_country FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(payment, (Some("ES".into()), Some("ES".into())));

    // A US card with a Spanish billing address.
    let (id, reply) = pay_from(&mut app, "pm_card_us", "198.51.100.2", "ES").await;
    assert_eq!(
        reply.name(),
        "authorized",
        "a review does not stop the payment"
    );
    let (verdict, rules, reasons) = decision(&app, id).await;
    assert_eq!(
        (verdict.as_str(), rules),
        ("review", vec!["country_mismatch".to_owned()])
    );
    assert_eq!(
        reasons[0]["detail"],
        "card issued in US, billing address in ES"
    );

    // Card and billing agree; the checkout comes from Brazil.
    let (id, _) = pay_from(&mut app, "pm_card_es", "203.0.113.5", "ES").await;
    let (verdict, _, reasons) = decision(&app, id).await;
    assert_eq!(verdict, "review");
    assert_eq!(reasons[0]["detail"], "checkout from an address in BR");

    // An address the table does not know says nothing.
    let (id, _) = pay_from(&mut app, "pm_card_es", "192.0.2.1", "ES").await;
    assert_eq!(decision(&app, id).await.0, "allow");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_unreadable_geoip_table_stops_the_start_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("tienda-geoip-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "198.51.100.0,198.51.100.255,ES\nnot,an,address\n").unwrap();
    let Err(error) =
        crate::helpers::try_spawn_app_with(&[&format!("--geoip-csv={}", csv.display())]).await
    else {
        panic!("a bad table is refused");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("PAYMENTS_GEOIP_CSV") && message.contains("line 2"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn rejecting_a_review_tells_orders_to_cancel_the_order() {
    let mut app = spawn_app().await;
    let (id, reply) = pay(&mut app, Uuid::now_v7(), "pm_card_visa", 150_000).await;
    assert_eq!(reply.name(), "authorized");
    let order_id = reply.data()["order_id"].clone();

    let (status, decided) = post(
        &app,
        &format!("/v1/payments/{id}/review"),
        &app.admin,
        json!({"outcome": "rejected", "note": "Card reported stolen"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");

    let told = app.reply().await;
    assert_eq!(told.name(), "review_rejected");
    assert_eq!(told.data()["payment_id"], json!(id));
    assert_eq!(told.data()["order_id"], order_id);
    assert_eq!(told.data()["note"], "Card reported stolen");
    assert_eq!(told.envelope.correlation_id, reply.envelope.correlation_id);
    // Nothing moved at payments itself: orders' cancellation voids it.
    assert_eq!(app.payment(id).await["status"], "authorized");
}

/// The customer's average is read from their authorized payments in the same currency, this
/// one left out: ten times it is held for review.
#[tokio::test]
async fn ten_times_a_customers_average_is_held_for_review() {
    let mut app = spawn_app().await;
    let customer = Uuid::now_v7();
    for amount in [1_000, 2_000, 3_000] {
        let (_, reply) = pay(&mut app, customer, "pm_card_visa", amount).await;
        assert_eq!(reply.name(), "authorized");
    }
    // 19,000 is 9.5× the average of 2,000: below the factor.
    let (below, reply) = pay(&mut app, customer, "pm_card_visa", 19_000).await;
    assert_eq!(reply.name(), "authorized");
    let (verdict, reasons, _) = decision(&app, below).await;
    assert_eq!(
        (verdict.as_str(), reasons.len()),
        ("allow", 0),
        "{reasons:?}"
    );
    // The average is now (1,000 + 2,000 + 3,000 + 19,000) / 4 = 6,250: 62,500 is 10×.
    let (held, reply) = pay(&mut app, customer, "pm_card_visa", 62_500).await;
    assert_eq!(
        reply.name(),
        "authorized",
        "a review does not stop the payment"
    );
    let (verdict, reasons, _) = decision(&app, held).await;
    assert_eq!(verdict, "review");
    assert_eq!(reasons, vec!["amount".to_owned()]);
}
